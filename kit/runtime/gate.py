"""The gate: an optimized model is published only when it is proven.

For a TensorRT optimization (any failing check fails the gate, exit 5):
- engines:        the saved model has at least one TRTEngineOp;
- batch_sizes:    every engine op has a built engine (from its engine asset's
                  input shapes) for every requested batch size -- otherwise
                  TF-TRT builds it at the first inference (30 min on a Nano)
                  or falls back to native TensorFlow;
- no_fallback:    the captured log shows no fallback to a native segment;
- no_oom:         the captured log shows no GPU/allocator out-of-memory (the BFC
                  allocator's "The caller indicates that this is not a failure"
                  warning is not one: trtlog counts it as a memory warning);
- segments:       no segment kept as native TensorFlow for an error ("Cannot
                  replace segment ...", "Failed to get engine info ...");
- calibration:    no "Calibration failed" (int8);
- parity:         outputs match the native model within the spec's limits.

For a native output (precision native, or a fallback the spec allows):
- labelled_native: the output has 0 TRTEngineOps, so "native" is true;
- parity:          the output loads and answers like the input model.

Python 3.6, stdlib only.
"""


def _check(name, ok, detail):
    return {"name": name, "passed": bool(ok), "detail": detail}


def evaluate_tensorrt(batch_sizes, audit, findings, parity):
    checks = []
    engines = audit["engines"] if audit else []
    checks.append(_check("engines", bool(engines),
                         "%d TRTEngineOp(s) in the saved model" % len(engines) if engines else
                         "0 TensorRT engines: TF-TRT converted nothing, the model would run as native TensorFlow"))
    missing = []
    for e in engines:
        built = set(e.get("built_batch_sizes") or [])
        if e["asset"]["error"]:
            missing.append("%s: engine asset unreadable (%s)" % (e["name"], e["asset"]["error"]))
            continue
        lacking = [b for b in batch_sizes if b not in built]
        if lacking:
            why = "no engine asset" if not e["asset"]["exists"] else "built only for %s" % (sorted(built) or "nothing")
            missing.append("%s has no built engine for batch size(s) %s (%s)" % (e["name"], lacking, why))
    if engines:
        checks.append(_check("batch_sizes", not missing, "; ".join(missing) if missing else
                             "every engine built for batch sizes %s" % list(batch_sizes)))
    fallbacks = (findings or {}).get("native_fallbacks") or []
    checks.append(_check("no_fallback", not fallbacks,
                         "no fallback to native segments in the log" if not fallbacks else
                         "%d fallback(s) to native TensorFlow in the log, first: %s"
                         % (len(fallbacks), _fallback_words(fallbacks[0]))))
    oom = (findings or {}).get("oom") or []
    checks.append(_check("no_oom", not oom, "no out-of-memory in the log" if not oom else
                         "%d out-of-memory line(s) in the log, first: %s" % (len(oom), oom[0]["line"])))
    unconverted = ["segment %s (%s): %s" % (x["segment"], x["op"], x["error"])
                   for x in (findings or {}).get("segments") or [] if not x["ok"]]
    unconverted += [x["error"] for x in (findings or {}).get("conversion_errors") or []]
    checks.append(_check("segments", not unconverted, "no segment kept native for an error" if not unconverted else
                         "%d segment(s) kept as native TensorFlow for an error, first: %s"
                         % (len(unconverted), unconverted[0])))
    calibration = (findings or {}).get("calibration_failures") or []
    checks.append(_check("calibration", not calibration, "no calibration failure in the log" if not calibration else
                         "INT8 calibration failed: %s" % calibration[0]["reason"]))
    checks.append(_parity_check(parity))
    return _result(checks)


def evaluate_native(audit, parity):
    checks = []
    n = len(audit["engines"]) if audit else 0
    checks.append(_check("labelled_native", n == 0, "the output has 0 TRTEngineOps" if n == 0 else
                         "the output labelled native has %d TRTEngineOp(s)" % n))
    checks.append(_parity_check(parity))
    return _result(checks)


def _fallback_words(item):
    op = item.get("op") or "an engine"
    kind = item["kind"]
    if kind == "engine_creation_failed":
        return "engine creation for %s failed (%s)" % (op, item.get("reason"))
    if kind == "engine_retrieval_failed":
        return "no engine for %s at input shapes %s" % (op, item.get("input_shapes") or item.get("batch_size"))
    if kind == "engine_execution_failed":
        return "executing the engine for %s failed (%s)" % (op, item.get("reason"))
    return item["line"]


def _parity_check(parity):
    if parity is None:
        return _check("parity", False, "parity did not run")
    if parity["passed"]:
        return _check("parity", True, "outputs match the native model (max abs error %.3g <= %.3g%s)" % (
            parity["max_abs_error"], parity["max_abs_error_limit"],
            "" if parity["top1_agreement"] is None else ", top-1 agreement %.4f >= %.4f" % (
                parity["top1_agreement"], parity["min_top1_agreement_limit"])))
    return _check("parity", False, "outputs differ from the native model: " + "; ".join(parity["reasons"][:3]))


def _result(checks):
    reasons = [c["detail"] for c in checks if not c["passed"]]
    return {"passed": not reasons, "reasons": reasons, "checks": checks}
