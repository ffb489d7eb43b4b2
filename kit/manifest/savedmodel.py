"""Read a SavedModel's serving signatures on the host, without TensorFlow
(a Jetson's host Python has none): saved_model.pb is decoded at the protobuf
wire level (kit.runtime.audit.wire_fields) with the field numbers of
TensorFlow's saved_model.proto, meta_graph.proto, tensor_shape.proto and
types.proto, which have not changed since TF 1.x.

  SavedModel       2: repeated MetaGraphDef
  MetaGraphDef     1: MetaInfoDef (4: repeated string tags), 5: map<string, SignatureDef>
  SignatureDef     1: map<string, TensorInfo> inputs, 2: outputs, 3: string method_name
  TensorInfo       1: string name (dense), 2: DataType dtype, 3: TensorShapeProto,
                   4/5: sparse / composite (not servable as dense tensors)
  TensorShapeProto 2: repeated Dim (1: int64 size, -1 unknown), 3: bool unknown_rank
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from kit.errors import ManifestError
from kit.runtime.audit import AuditError, wire_fields

# types.proto DataType numbers -> the manifest's dtype names
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 9: "int64",
          10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}
INTERNAL_SIGNATURES = ("__saved_model_init_op",)


@dataclass(frozen=True)
class Tensor:
    key: str
    dtype: str  # a DTYPES value, or "composite" / "unknown(N)"
    shape: Optional[Tuple[Optional[int], ...]]  # None: unknown rank; None entries: unknown dims


@dataclass(frozen=True)
class SignatureInfo:
    key: str
    method_name: str
    inputs: Tuple[Tensor, ...]
    outputs: Tuple[Tensor, ...]


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: bytes) -> List[tuple]:
    return list(wire_fields(buf))


def _map_entry(buf: bytes) -> Tuple[str, bytes]:
    key, value = "", b""
    for num, _, val in wire_fields(buf):
        if num == 1:
            key = val.decode("utf-8", "replace")
        elif num == 2:
            value = val
    return key, value


def _shape(buf: bytes):
    dims, unknown_rank = [], False
    for num, _, val in wire_fields(buf):
        if num == 2:
            size = -1
            for dnum, _, dval in wire_fields(val):
                if dnum == 1:
                    size = _int64(dval)
            dims.append(None if size < 0 else size)
        elif num == 3:
            unknown_rank = bool(val)
    return None if unknown_rank else tuple(dims)


def _tensor(key: str, buf: bytes) -> Tensor:
    dtype, shape, dense = 0, (), False
    for num, _, val in wire_fields(buf):
        if num == 1:
            dense = True
        elif num == 2:
            dtype = val
        elif num == 3:
            shape = _shape(val)
    if not dense:
        return Tensor(key, "composite", None)
    return Tensor(key, DTYPES.get(dtype, f"unknown({dtype})"), shape)


def _signature(key: str, buf: bytes) -> SignatureInfo:
    inputs, outputs, method = [], [], ""
    for num, _, val in wire_fields(buf):
        if num in (1, 2):
            k, v = _map_entry(val)
            (inputs if num == 1 else outputs).append(_tensor(k, v))
        elif num == 3:
            method = val.decode("utf-8", "replace")
    return SignatureInfo(key, method, tuple(sorted(inputs, key=lambda t: t.key)),
                         tuple(sorted(outputs, key=lambda t: t.key)))


def read_signatures(model_dir: Path, tag: str = "serve") -> Dict[str, SignatureInfo]:
    """The signatures of the meta graph tagged `tag` (else the first), by key, without TensorFlow."""
    pb = Path(model_dir) / "saved_model.pb"
    if not pb.is_file():
        hint = None
        if (Path(model_dir) / "saved_model.pbtxt").is_file():
            hint = "kit init reads saved_model.pb; re-save the model in binary form (tf.saved_model.save)"
        raise ManifestError(f"{model_dir} is not a SavedModel directory (no saved_model.pb)",
                            hint=hint or "give the directory tf.saved_model.save() wrote (it holds saved_model.pb)")
    try:
        metas = [val for num, _, val in wire_fields(pb.read_bytes()) if num == 2]
        chosen = None
        for meta in metas:
            tags = []
            for num, _, val in wire_fields(meta):
                if num == 1:
                    tags = [v.decode() for n, _, v in wire_fields(val) if n == 4]
            if tag in tags:
                chosen = meta
                break
        if chosen is None and metas:
            chosen = metas[0]
        if chosen is None:
            raise ManifestError(f"{pb} has no meta graph")
        out = {}
        for num, _, val in wire_fields(chosen):
            if num == 5:
                key, sig = _map_entry(val)
                if key not in INTERNAL_SIGNATURES:
                    out[key] = _signature(key, sig)
        return out
    except (AuditError, UnicodeDecodeError) as e:
        raise ManifestError(f"{pb} is not a readable SavedModel protobuf: {e}") from None
