"""URL -> protocol call: which endpoint a request is, and its answer.

No sockets and no event loop here: `resolve` names the endpoint from the
method and path, `answer` produces a Response for everything that is not an
inference, and `inference` returns an Inference (a parse function and the
checks before it) that the transport runs off the event loop. The protocol
formats live in tfserving.py, kserve_v2.py and examples.py.
"""

import json
import re

from kit import __version__
from kit.runtime.serving import encoding, examples, inference as inference_calls, kserve_v2, protocol, tfserving
from kit.runtime.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

_V1 = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:[A-Za-z]+)?$")
_V2_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer|/config|/stats)?$")

RETRY_AFTER_SECONDS = 1


def encode_json(data):
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


class Response(object):
    """status, body parts (bytes-like, sent in order), headers, the metrics endpoint label."""

    __slots__ = ("status", "parts", "headers", "endpoint", "rejected")

    def __init__(self, status, parts, headers, endpoint, rejected=None):
        self.status = status
        self.parts = parts
        self.headers = headers
        self.endpoint = endpoint
        self.rejected = rejected  # the kit_rejected_total reason of a 503, if any


def json_response(status, data, endpoint, headers=None):
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return Response(status, [encode_json(data)], all_headers, endpoint)


def error(status, message, endpoint, headers=None):
    return json_response(status, {"error": message}, endpoint, headers)


def unavailable(message, endpoint, reason):
    response = error(503, message, endpoint, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    response.rejected = reason
    return response


class Route(object):
    """What a request asks for. kind: v1, v2, health, metrics, server, none (no such endpoint)."""

    __slots__ = ("kind", "name", "version", "rest", "path")

    def __init__(self, kind, path, name=None, version=None, rest=""):
        self.kind = kind
        self.path = path
        self.name = name
        self.version = version
        self.rest = rest

    @property
    def endpoint(self):
        return self.kind if self.kind in ("v1", "v2", "health", "metrics") else ("v2" if self.kind == "server"
                                                                                else "other")

    def is_inference(self, method):
        return method == "POST" and ((self.kind == "v1" and self.rest in V1_VERBS)
                                     or (self.kind == "v2" and self.rest == "/infer"))


V1_VERBS = (":predict", ":classify", ":regress")


def resolve(path):
    path = path.split("?", 1)[0]
    m = _V1.match(path)
    if m:
        return Route("v1", path, m.group("name"), m.group("version"), m.group("rest") or "")
    m = _V2_MODEL.match(path)
    if m:
        return Route("v2", path, m.group("name"), m.group("version"), m.group("rest") or "")
    if path in ("/v2/health/live", "/v2/health/ready"):
        return Route("health", path)
    if path == "/metrics":
        return Route("metrics", path)
    if path in ("/v2", "/v2/"):
        return Route("server", path)
    return Route("none", path)


def not_ready_reason(state):
    reason = inference_calls.not_ready_reason(state)
    if reason == "warming up":
        return "warming up at batch sizes %s" % ",".join(str(b) for b in state.config.batch_sizes)
    return reason


def _check_model(state, route, endpoint, versions_word="version"):
    """A 404 Response for a model/version this server does not hold, else None."""
    config = state.config
    if route.name != config.model_name:
        return error(404, "Servable not found for request: Latest(%s) (this server serves '%s')"
                     % (route.name, config.model_name), endpoint)
    if route.version is not None and route.version != config.model_version:
        return error(404, "Servable not found for request: Specific(%s, %s) (serving %s %s)"
                     % (route.name, route.version, versions_word, config.model_version), endpoint)
    return None


def answer(state, method, route):
    """The Response to every request that is not an inference (the body, if any, was read and dropped)."""
    endpoint = route.endpoint
    if route.kind == "v1":
        return _v1(state, method, route)
    if route.kind == "v2":
        return _v2(state, method, route)
    if method != "GET":
        return error(404, "no such endpoint: %s %s" % (method, route.path), "other")
    if route.kind == "health":
        if route.path == "/v2/health/live":
            return json_response(200, {"live": True}, endpoint)
        if state.is_ready():
            return json_response(200, {"ready": True}, endpoint)
        return json_response(503, {"ready": False, "error": not_ready_reason(state)}, endpoint)
    if route.kind == "metrics":
        return Response(200, [state.metrics.render()], {"Content-Type": METRICS_CONTENT_TYPE}, endpoint)
    if route.kind == "server":
        return json_response(200, {"name": "kit", "version": __version__, "extensions": ["binary_tensor_data"]},
                             endpoint)
    return error(404, "no such endpoint: GET %s" % route.path, "other")


def _v1(state, method, route):
    endpoint = "v1"
    rest = route.rest
    if method == "POST":
        return error(404, "no such endpoint: POST %s (use :predict, :classify or :regress)" % route.path, endpoint)
    if rest not in ("", "/metadata"):
        return error(405, "use POST for %s" % rest, endpoint, {"Allow": "POST"})
    missing = _check_model(state, route, endpoint)
    if missing:
        return missing
    if rest == "":
        return json_response(200, model_status(state), endpoint)
    if state.model is None:
        return unavailable("model '%s' is loading" % route.name, endpoint, "not_ready")
    return json_response(200, state.model.tfserving_metadata(), endpoint)


def model_status(state):
    """TF Serving's GET /v1/models/NAME: AVAILABLE only once warm (inference answers), LOADING before."""
    status = {"error_code": "OK", "error_message": ""}
    if state.failed:
        status = {"error_code": "INTERNAL", "error_message": state.failed}
    return {"model_version_status": [{"version": state.config.model_version,
                                      "state": inference_calls.model_state(state), "status": status}]}


def _v2(state, method, route):
    endpoint = "v2"
    rest = route.rest
    if method == "POST":
        return error(405, "use GET for %s" % (rest or "model metadata"), endpoint, {"Allow": "GET"})
    if rest == "/infer":
        return error(405, "use POST for /infer", endpoint, {"Allow": "POST"})
    missing = _check_model(state, route, endpoint)
    if missing:
        return missing
    if rest == "/ready":
        if state.is_ready():
            return json_response(200, {"name": route.name, "ready": True}, endpoint)
        return json_response(503, {"name": route.name, "ready": False, "error": not_ready_reason(state)}, endpoint)
    if state.model is None:
        return unavailable("model '%s' is loading" % route.name, endpoint, "not_ready")
    if rest == "/config":
        return json_response(200, kserve_v2.model_config(state.model, state.config), endpoint)
    if rest == "/stats":
        return json_response(200, kserve_v2.model_stats(state.model, state.metrics), endpoint)
    return json_response(200, state.model.v2_metadata(), endpoint)


class Inference(object):
    """An inference request that passed the cheap checks: parse() -> ParsedRequest (raises RequestError)."""

    __slots__ = ("endpoint", "parse")

    def __init__(self, endpoint, parse):
        self.endpoint = endpoint
        self.parse = parse


def inference(state, route, body, header_length, content_encoding=None):
    """An Inference to run, or the Response that refuses it (unknown model, not ready, queue full,
    an unsupported Content-Encoding)."""
    endpoint = route.kind
    if not encoding.supported(content_encoding):
        return error(415, "Content-Encoding %s is not supported: send gzip, deflate or identity"
                     % content_encoding, endpoint)
    missing = _check_model(state, route, endpoint)
    if missing:
        return missing
    if not state.ready:
        return unavailable("model '%s' is not ready: %s" % (state.config.model_name, not_ready_reason(state)),
                           endpoint, "not_ready")
    if not state.batcher.has_room():
        return queue_full(state, endpoint)
    model, limit, config = state.model, state.config.max_instances, state.config
    if content_encoding and content_encoding.strip().lower() != "identity":
        # The decompressed body counts against the limit the transport applied to the body as sent.
        size, name = ((config.max_body, "KIT_MAX_BODY") if header_length is not None
                      else (config.max_json_body, "KIT_MAX_JSON_BODY"))
        raw = body

        def parse():
            plain = encoding.decode(raw, content_encoding, size, name)
            return parse_plain(state, route, plain, header_length, model, limit)

        return Inference(endpoint, parse)
    return Inference(endpoint, lambda: parse_plain(state, route, body, header_length, model, limit))


def parse_plain(state, route, body, header_length, model, limit):
    if route.kind == "v1" and route.rest in (":classify", ":regress"):
        return parse_examples(body, model, route.rest[1:], limit)
    if route.kind == "v1":
        return tfserving.parse_tfserving(body, model, limit)
    return kserve_v2.parse_v2(body, model, limit, header_length)


def parse_examples(body, model, method, limit):
    """A TF Serving REST classify/regress body -> ParsedRequest of serialized tf.Examples."""
    from kit.runtime.serving.grpc_messages import messages

    return examples.parse_json(protocol.load_json(body), lambda name: protocol.pick_signature(model, name),
                               method, messages()["tensorflow.Example"], limit)


def queue_full(state, endpoint):
    return unavailable("overloaded: the request queue is full (%d items); retry later" % state.batcher.max_queue,
                       endpoint, "queue_full")


def inference_response(parsed, outputs, model):
    try:
        return _inference_response(parsed, outputs, model)
    except protocol.RequestError as e:  # outputs the signature's method cannot answer (e.g. no 'scores')
        return error(e.status, e.message, parsed.fmt if parsed.fmt == "v2" else "v1", e.headers)


def _inference_response(parsed, outputs, model):
    if parsed.fmt == "v2":
        parts, headers = kserve_v2.v2_response(parsed, outputs, model)
    elif parsed.fmt == "classify":
        return json_response(200, examples.classify_json(examples.classifications(outputs, parsed.rows)), "v1")
    elif parsed.fmt == "regress":
        return json_response(200, examples.regress_json(examples.regressions(outputs, parsed.rows)), "v1")
    else:
        parts, headers = [tfserving.tfserving_response(parsed, outputs)], {"Content-Type": "application/json"}
    return Response(200, parts, headers, parsed.fmt)


def inference_failure(error_, endpoint):
    """TensorFlow's InvalidArgumentError means the input was wrong (e.g. a bad tf.Example): 400. The model's
    message is kept whole (as on gRPC)."""
    text = inference_calls.model_error_text(error_)
    if type(error_).__name__ == "InvalidArgumentError":
        return error(400, "the model rejected the input: %s" % text, endpoint)
    return error(500, "inference failed: %s: %s" % (type(error_).__name__, text), endpoint)
