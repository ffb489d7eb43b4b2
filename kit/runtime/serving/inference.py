"""One inference call, shared by the REST and gRPC fronts.

A parsed request goes to the micro-batcher and its outputs come back; every
way this can fail becomes a RequestError with the HTTP status it maps to
(gRPC maps the status to its own codes): 503 not ready / overloaded /
draining (with Retry-After), 400 when TensorFlow rejects the input, 500 when
the model fails otherwise. The model's message is kept whole.
"""

import logging

from kit.runtime.serving.batching import QueueFull, Stopped
from kit.runtime.serving.protocol import RequestError

log = logging.getLogger("kit.serve")

RETRY_AFTER_SECONDS = 1


def unavailable(state, message, reason):
    state.metrics.rejected.inc(1, reason)
    return RequestError(503, message, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def not_ready_reason(state):
    if state.failed:
        return "the model failed to load: %s" % state.failed
    if state.model is None:
        return "loading the model"
    if state.draining:
        return "shutting down"
    return "warming up"


def check_ready(state):
    """Raise 503 unless the model serves (a request already received is still served while draining)."""
    if not state.ready:
        raise unavailable(state, "model '%s' is not ready: %s" % (state.config.model_name, not_ready_reason(state)),
                          "not_ready")
    if not state.batcher.has_room():
        raise unavailable(state, "overloaded: the request queue is full (%d items); retry later"
                          % state.batcher.max_queue, "queue_full")


def model_state(state):
    """TF Serving's version state: AVAILABLE only once warm (when inference answers), LOADING before."""
    if state.failed:
        return "END"
    if state.draining:
        return "UNLOADING"
    return "AVAILABLE" if state.ready else "LOADING"


def model_error_text(error):
    """TensorFlow's message without the Python call stack it sometimes carries; never cut short."""
    text = str(getattr(error, "message", None) or error).strip()
    # TF 2.3 appends a "Function call stack:" paragraph (Python frames, not the model's message).
    paragraphs = [p for p in text.split("\n\n") if not p.strip().startswith("Function call stack:")]
    text = "\n\n".join(paragraphs).strip()
    return text or type(error).__name__


def run(state, parsed):
    """Queue `parsed` (a ParsedRequest), wait for its outputs (key -> numpy array)."""
    batcher = state.batcher
    try:
        pending = batcher.submit(parsed.signature.key, parsed.inputs, parsed.rows, parsed.batchable)
    except QueueFull:
        raise unavailable(state, "overloaded: the request queue is full (%d items); retry later"
                          % batcher.max_queue, "queue_full")
    except Stopped:
        raise unavailable(state, "the server is shutting down", "draining")
    try:
        return pending.wait()
    except Exception as e:
        # TensorFlow's InvalidArgumentError means the input was wrong (e.g. a bad tf.Example, bad JPEG bytes).
        if type(e).__name__ == "InvalidArgumentError":
            raise RequestError(400, "the model rejected the input: %s" % model_error_text(e))
        log.error("inference failed: %s: %s", type(e).__name__, e)
        raise RequestError(500, "inference failed: %s: %s" % (type(e).__name__, model_error_text(e)))
