"""Audit a SavedModel for TF-TRT engines, reading files only (no TensorRT, no model load).

What it reads:
- saved_model.pb as protobuf: every node of the meta graph's graph_def and
  of its function library (TF2 SavedModels keep the model in functions).
- TRTEngineOp nodes and their attributes: precision_mode,
  max_cached_engines_count, workspace_size_bytes, static_engine,
  segment_func, input_shapes.
- the engine assets `assets/trt-serialized-engine.<op name>` that TF-TRT
  writes when build() ran: a TFRecord file of TRTEngineInstance messages,
  one per built input shape. The TFRecord framing is parsed here (length,
  masked CRC-32C of the length, data, masked CRC-32C of the data; data CRCs
  are verified for records up to 1 MiB, larger ones -- the engines
  themselves -- are checked for framing and truncation only, to keep the
  audit fast in pure Python). TRTEngineInstance: field 1 repeated
  TensorShapeProto input_shapes, field 2 bytes serialized_engine; decoded
  with a small varint reader and tensor_shape_pb2.

Coverage, as reported:
- the serving path is every graph node that feeds a signature output plus
  every function those nodes call, transitively -- but not the
  `*_native_segment` functions (the native copies TF-TRT keeps for fallback)
  nor the save/restore functions;
- "noise" ops are plumbing that TF-TRT never needs to convert: Const, NoOp,
  Identity, IdentityN, Placeholder, PlaceholderWithDefault, _Arg, _Retval,
  PartitionedCall, StatefulPartitionedCall, VarHandleOp, ReadVariableOp;
- native_ops = serving-path nodes that are neither noise nor TRTEngineOp
  (what still runs in native TensorFlow);
- converted_ops = non-noise nodes inside the native segment functions of
  the engines (what TensorRT runs);
- coverage_percent = 100 * converted_ops / (converted_ops + native_ops),
  0 when both are 0.

Python 3.6; numpy not needed; TensorFlow's protobuf modules imported lazily.
Run in a container as `python3 -m kit.runtime.audit DIR [--json]`.
"""

import json
import os
import struct
import sys

ENGINE_OP = "TRTEngineOp"
ASSET_PREFIX = "trt-serialized-engine."
NATIVE_SEGMENT_SUFFIX = "_native_segment"
NOISE_OPS = frozenset([
    "Const", "NoOp", "Identity", "IdentityN", "Placeholder", "PlaceholderWithDefault", "_Arg", "_Retval",
    "PartitionedCall", "StatefulPartitionedCall", "VarHandleOp", "ReadVariableOp",
])
COVERAGE_FORMULA = ("coverage_percent = 100 * converted_ops / (converted_ops + native_ops); converted_ops = "
                    "non-noise ops in the engines' native segment functions; native_ops = non-noise, non-TRTEngineOp "
                    "ops on the serving path; noise = " + ", ".join(sorted(NOISE_OPS)))
NATIVE_SUMMARY = "0 TensorRT engines: this SavedModel is native TensorFlow"
CRC_CHECK_LIMIT = 1 << 20


class AuditError(Exception):
    pass


# ---- CRC-32C and TFRecord framing ---------------------------------------------------------

def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in bytearray(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path):
    """Yield each record's bytes; raise AuditError on bad framing or CRC."""
    with open(path, "rb") as f:
        index = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise AuditError("%s: record %d: truncated header" % (path, index))
            length_bytes = header[:8]
            (length,) = struct.unpack("<Q", length_bytes)
            (length_crc,) = struct.unpack("<I", header[8:])
            if masked_crc(length_bytes) != length_crc:
                raise AuditError("%s: record %d: length CRC mismatch (not a TFRecord file, or corrupt)" % (path, index))
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise AuditError("%s: record %d: truncated (%d of %d bytes)" % (path, index, len(data), length))
            if length <= CRC_CHECK_LIMIT and masked_crc(data) != struct.unpack("<I", footer)[0]:
                raise AuditError("%s: record %d: data CRC mismatch (corrupt)" % (path, index))
            yield data
            index += 1


# ---- protobuf wire reading for TRTEngineInstance -------------------------------------------

def _varint(buf, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise AuditError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def wire_fields(buf):
    """Yield (field_number, wire_type, value) of a serialized message; value is int or bytes."""
    buf = bytearray(buf)
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos:pos + n]), pos + n
        elif wire == 5:
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        else:
            raise AuditError("unsupported protobuf wire type %d" % wire)
        if pos > len(buf):
            raise AuditError("truncated protobuf field %d" % field)
        yield field, wire, value


def _shape_dims(shape_proto):
    if shape_proto.unknown_rank:
        return None
    return [None if d.size < 0 else int(d.size) for d in shape_proto.dim]


def decode_engine_instance(data):
    """TRTEngineInstance bytes -> {"input_shapes": [[...], ...], "engine_bytes": n}."""
    from tensorflow.core.framework import tensor_shape_pb2  # noqa: lazy on purpose

    shapes, engine_bytes = [], 0
    for field, wire, value in wire_fields(data):
        if field == 1 and wire == 2:
            shapes.append(_shape_dims(tensor_shape_pb2.TensorShapeProto.FromString(value)))
        elif field == 2 and wire == 2:
            engine_bytes = len(value)
    return {"input_shapes": shapes, "engine_bytes": engine_bytes}


def read_engine_asset(path):
    """Every TRTEngineInstance in one engine asset file."""
    return [decode_engine_instance(record) for record in read_tfrecords(path)]


# ---- graph walking ------------------------------------------------------------------------

def _attr_functions(node):
    """Names of the functions a node calls (excluding TF-TRT's segment_func)."""
    names = []
    for key, value in node.attr.items():
        if key == "segment_func":
            continue
        if value.HasField("func"):
            names.append(value.func.name)
        elif value.HasField("list"):
            names.extend(f.name for f in value.list.func)
    return names


def _input_node(name):
    return name.lstrip("^").split(":")[0]


def serving_path(meta_graph, signature=None):
    """(graph nodes, function names) on the path of the signature(s) (all when signature is None)."""
    graph_def = meta_graph.graph_def
    by_name = dict((n.name, n) for n in graph_def.node)
    library = dict((f.signature.name, f) for f in graph_def.library.function)
    sigs = meta_graph.signature_def
    keys = [signature] if signature else sorted(sigs)
    if signature and signature not in sigs:
        raise AuditError("no signature %r (the SavedModel has: %s)" % (signature, ", ".join(sorted(sigs)) or "none"))
    start = [_input_node(t.name) for k in keys for t in sigs[k].outputs.values()]
    if not start:  # no signatures at all: everything in the graph
        start = list(by_name)
    seen_nodes, stack = set(), list(start)
    while stack:
        name = stack.pop()
        if name in seen_nodes or name not in by_name:
            continue
        seen_nodes.add(name)
        stack.extend(_input_node(i) for i in by_name[name].input)
    nodes = [by_name[n] for n in sorted(seen_nodes)]
    functions, stack = set(), []
    for n in nodes:
        stack.extend(_attr_functions(n))
        if n.op in library:
            stack.append(n.op)
    while stack:
        fname = stack.pop()
        if fname in functions or fname not in library or fname.endswith(NATIVE_SEGMENT_SUFFIX):
            continue
        functions.add(fname)
        for n in library[fname].node_def:
            stack.extend(_attr_functions(n))
            if n.op in library:
                stack.append(n.op)
    return nodes, sorted(functions)


def _engine_attrs(node):
    a = node.attr

    def get(key, kind):
        if key not in a:
            return None
        v = a[key]
        if kind == "s":
            return v.s.decode("utf-8", "replace")
        if kind == "i":
            return int(v.i)
        if kind == "b":
            return bool(v.b)
        if kind == "func":
            return v.func.name or None
        if kind == "shapes":
            return [_shape_dims(s) for s in v.list.shape]
        return None

    return {
        "precision_mode": get("precision_mode", "s"),
        "max_cached_engines_count": get("max_cached_engines_count", "i"),
        "workspace_size_bytes": get("workspace_size_bytes", "i"),
        "static_engine": get("static_engine", "b"),
        "segment_func": get("segment_func", "func"),
        "input_shapes": get("input_shapes", "shapes"),
        "use_calibration": get("use_calibration", "b"),
        "allow_build_at_runtime": get("_allow_build_at_runtime", "b"),
    }


def _count(nodes, counter):
    for n in nodes:
        counter[n.op] = counter.get(n.op, 0) + 1


def audit_saved_model(model_dir, signature=None, tags=("serve",)):
    """The audit of one SavedModel directory as a JSON-friendly dict."""
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: lazy on purpose

    pb = os.path.join(model_dir, "saved_model.pb")
    if not os.path.isfile(pb):
        raise AuditError("%s is not a SavedModel directory (no saved_model.pb)" % model_dir)
    sm = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        try:
            sm.ParseFromString(f.read())
        except Exception as e:  # protobuf's DecodeError has no stable import path across versions
            raise AuditError("%s: saved_model.pb does not parse: %s" % (model_dir, e))
    mg = None
    for candidate in sm.meta_graphs:
        if set(tags) <= set(candidate.meta_info_def.tags):
            mg = candidate
            break
    if mg is None:
        raise AuditError("%s: no meta graph with tags %s" % (model_dir, list(tags)))
    graph_def = mg.graph_def
    library = dict((f.signature.name, f) for f in graph_def.library.function)

    # Every TRTEngineOp, wherever it is.
    in_graph = [n for n in graph_def.node if n.op == ENGINE_OP]
    in_functions = [(f.signature.name, n) for f in graph_def.library.function for n in f.node_def if n.op == ENGINE_OP]
    engines = {}
    for where, node in [("graph", n) for n in in_graph] + list(in_functions):
        name = node.name.split("/")[-1]
        entry = engines.get(name)
        if entry is None:
            entry = {"name": name, "locations": []}
            entry.update(_engine_attrs(node))
            engines[name] = entry
        entry["locations"].append(where)

    # Ops on the serving path.
    nodes, functions = serving_path(mg, signature)
    all_nodes = list(nodes)
    for fname in functions:
        all_nodes.extend(library[fname].node_def)
    by_type = {}
    _count([n for n in all_nodes if n.op not in NOISE_OPS and n.op != ENGINE_OP], by_type)
    native_ops = sum(by_type.values())

    converted_ops = 0
    assets_dir = os.path.join(model_dir, "assets")
    for entry in engines.values():
        seg = entry["segment_func"] or (entry["name"] + NATIVE_SEGMENT_SUFFIX)
        if seg in library:
            entry["segment_ops"] = sum(1 for n in library[seg].node_def if n.op not in NOISE_OPS)
            converted_ops += entry["segment_ops"]
        else:
            entry["segment_ops"] = None
        asset = os.path.join(assets_dir, ASSET_PREFIX + entry["name"])
        entry["asset"] = {"path": os.path.relpath(asset, model_dir), "exists": os.path.isfile(asset),
                          "instances": [], "error": None}
        if entry["asset"]["exists"]:
            try:
                entry["asset"]["instances"] = read_engine_asset(asset)
            except AuditError as e:
                entry["asset"]["error"] = str(e)
        entry["built_batch_sizes"] = sorted(set(
            i["input_shapes"][0][0] for i in entry["asset"]["instances"]
            if i["input_shapes"] and i["input_shapes"][0] and i["input_shapes"][0][0] is not None))

    total_denominator = converted_ops + native_ops
    coverage = round(100.0 * converted_ops / total_denominator, 2) if total_denominator else 0.0
    engine_list = [engines[k] for k in sorted(engines)]
    result = {
        "path": os.path.abspath(model_dir),
        "signature": signature,
        "ops_total": len(all_nodes),
        "trt_engine_ops": {"graph": len(in_graph), "functions": len(in_functions), "unique": len(engine_list)},
        "engines": engine_list,
        "native_segment_functions": sorted(n for n in library if n.endswith(NATIVE_SEGMENT_SUFFIX)),
        "native_ops": native_ops,
        "native_ops_by_type": dict(sorted(by_type.items())),
        "converted_ops": converted_ops,
        "coverage_percent": coverage,
        "coverage_formula": COVERAGE_FORMULA,
        "engine_assets": sorted(f for f in (os.listdir(assets_dir) if os.path.isdir(assets_dir) else [])
                                if f.startswith(ASSET_PREFIX)),
        "is_native": not engine_list,
    }
    result["summary"] = summary(result)
    return result


def summary(audit):
    if audit["is_native"]:
        return NATIVE_SUMMARY
    built = sum(len(e["asset"]["instances"]) for e in audit["engines"])
    missing = [e["name"] for e in audit["engines"] if not e["asset"]["exists"]]
    text = "%d TensorRT engine op(s), %d built engine(s) saved; coverage %.1f%% of compute ops (%d converted, %d left " \
           "to native TensorFlow)" % (len(audit["engines"]), built, audit["coverage_percent"], audit["converted_ops"],
                                      audit["native_ops"])
    if missing:
        text += "; no saved engine for %s (they would be built at the first inference)" % ", ".join(missing)
    return text


def render_text(audit):
    lines = [audit["path"], "  " + audit["summary"]]
    lines.append("  ops on the serving path: %d total, %d left to native TensorFlow, %d converted"
                 % (audit["ops_total"], audit["native_ops"], audit["converted_ops"]))
    for e in audit["engines"]:
        lines.append("  %s: precision %s, max_cached_engines %s, workspace %s, segment ops %s"
                     % (e["name"], e["precision_mode"], e["max_cached_engines_count"], e["workspace_size_bytes"],
                        e["segment_ops"]))
        a = e["asset"]
        if not a["exists"]:
            lines.append("    no engine asset %s (build() did not run for it)" % a["path"])
        elif a["error"]:
            lines.append("    engine asset %s unreadable: %s" % (a["path"], a["error"]))
        else:
            for inst in a["instances"]:
                lines.append("    built for input shapes %s (%d bytes)" % (inst["input_shapes"], inst["engine_bytes"]))
    return "\n".join(lines)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kit.runtime.audit", description="Audit a SavedModel for TF-TRT engines.")
    parser.add_argument("model_dir")
    parser.add_argument("--signature", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = audit_saved_model(args.model_dir, args.signature)
    except AuditError as e:
        sys.stderr.write("kit: audit failed: %s\n" % e)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_text(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
