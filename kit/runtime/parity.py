"""Parity: the optimized model must answer like the native one.

Both SavedModels run on the same inputs (parity samples, else seeded random
data in the signature's shapes) at every batch size. Per output: the
maximum absolute difference; for 2-D float outputs with more than one
column (class scores) also the top-1 agreement (share of rows whose argmax
is the same). Limits come from the spec: max_abs_error and
min_top1_agreement. Non-finite outputs fail.

Python 3.6; numpy; TensorFlow passed in.
"""

import numpy as np


def compare(reference, candidate, max_abs_error, min_top1_agreement):
    """Compare two dicts name -> array. Returns {name: metrics} and the failure reasons."""
    metrics, reasons = {}, []
    for name in sorted(reference):
        ref = np.asarray(reference[name])
        if name not in candidate:
            reasons.append("output %r is missing from the optimized model" % name)
            continue
        got = np.asarray(candidate[name])
        m = {"shape": list(ref.shape), "max_abs_error": None, "top1_agreement": None}
        metrics[name] = m
        if ref.shape != got.shape:
            reasons.append("output %r has shape %s, native %s" % (name, list(got.shape), list(ref.shape)))
            continue
        if ref.dtype.kind in "fc" or got.dtype.kind in "fc":
            if not np.all(np.isfinite(got)):
                reasons.append("output %r has non-finite values (NaN/Inf) in the optimized model" % name)
                m["max_abs_error"] = float("inf")
                continue
            err = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0
        else:
            err = float(np.max(np.abs(ref.astype(np.int64) - got.astype(np.int64)))) if ref.size else 0.0
        m["max_abs_error"] = err
        if err > max_abs_error:
            reasons.append("output %r: max abs error %.6g > %.6g" % (name, err, max_abs_error))
        if ref.ndim == 2 and ref.shape[1] > 1 and ref.dtype.kind == "f" and ref.shape[0] > 0:
            agreement = float(np.mean(np.argmax(ref, axis=1) == np.argmax(got, axis=1)))
            m["top1_agreement"] = agreement
            if agreement < min_top1_agreement:
                reasons.append("output %r: top-1 agreement %.4f < %.4f" % (name, agreement, min_top1_agreement))
    return metrics, reasons


def _signature_fn(tf, model_dir, signature, tags):
    loaded = tf.saved_model.load(model_dir, tags=list(tags))
    if signature not in loaded.signatures:
        raise ValueError("%s has no signature %r" % (model_dir, signature))
    return loaded, loaded.signatures[signature]


def _run(tf, fn, feed):
    out = fn(**dict((k, tf.constant(v)) for k, v in feed.items()))
    if not isinstance(out, dict):  # signatures return dicts; be lenient with odd ones
        out = {"output_0": out}
    return dict((k, v.numpy()) for k, v in out.items())


def run_parity(tf, reference_dir, candidate_dir, signature, tags, feeds, max_abs_error, min_top1_agreement,
               source="random"):
    """Run both models on `feeds` ({batch_size: {name: array}}) and compare."""
    ref_model, ref_fn = _signature_fn(tf, reference_dir, signature, tags)
    cand_model, cand_fn = _signature_fn(tf, candidate_dir, signature, tags)
    batches, reasons = [], []
    worst_err, worst_top1 = 0.0, None
    for b in sorted(feeds):
        ref = _run(tf, ref_fn, feeds[b])
        got = _run(tf, cand_fn, feeds[b])
        metrics, why = compare(ref, got, max_abs_error, min_top1_agreement)
        batches.append({"batch_size": b, "outputs": metrics})
        reasons.extend("batch %d: %s" % (b, r) for r in why)
        for m in metrics.values():
            if m["max_abs_error"] is not None:
                worst_err = max(worst_err, m["max_abs_error"])
            if m["top1_agreement"] is not None:
                worst_top1 = m["top1_agreement"] if worst_top1 is None else min(worst_top1, m["top1_agreement"])
    del ref_model, cand_model
    return {
        "passed": not reasons,
        "source": source,
        "max_abs_error_limit": max_abs_error,
        "min_top1_agreement_limit": min_top1_agreement,
        "max_abs_error": worst_err,
        "top1_agreement": worst_top1,
        "batches": batches,
        "reasons": reasons,
    }
