"""The smoke checks a rollout runs on a device after its new container is healthy: one real
prediction over REST (TF Serving), KServe v2 readiness over gRPC."""

from __future__ import annotations

from kit.errors import RolloutError
from kit.net import http_json

SMOKE_TIMEOUT = 60.0
SLOT_TRIES = 40  # requests until one reaches the new server while the old one shares the port


_ZERO = {"DT_STRING": "", "DT_BOOL": False}


def zero_example(tensor: dict):
    """Zeros of one example of a TF Serving metadata tensor (unknown dims as 1)."""
    dims = [int(d.get("size", -1)) for d in (tensor.get("tensor_shape") or {}).get("dim", [])]
    zero = _ZERO.get(tensor.get("dtype"), 0.0 if "FLOAT" in str(tensor.get("dtype")) or
                     "DOUBLE" in str(tensor.get("dtype")) or "HALF" in str(tensor.get("dtype")) else 0)
    value = zero
    for d in reversed(dims[1:]):
        value = [value] * (d if d > 0 else 1)
    return value


def _http_json(url: str, payload: dict | None = None, timeout: float = SMOKE_TIMEOUT, slot: str | None = None) -> dict:
    """With `slot`: retried until the server of that slot answers (Kit-Slot header): during a
    start-first update the kernel hands each new connection to the old or the new server."""
    for _ in range(SLOT_TRIES if slot else 1):
        reply = http_json(url, payload, timeout, error=RolloutError)
        if slot is None or (reply.headers or {}).get("Kit-Slot") == slot:
            break
    else:
        raise RolloutError(f"{url}: {SLOT_TRIES} requests, none answered by the new server (slot {slot})")
    if reply.status >= 400:
        raise RolloutError(f"{url} answered {reply.status}: {str(reply.body)[:300]}")
    if not isinstance(reply.body, dict):
        raise RolloutError(f"{url}: the reply is not a JSON object: {str(reply.body)[:200]}")
    return reply.body


def smoke(address: str, port: int, model: str, timeout: float = SMOKE_TIMEOUT, slot: str | None = None) -> dict:
    """One real prediction: zeros shaped like the default signature's inputs
    (from the server's TF Serving metadata), batch of one; with `slot`, by that slot's server.
    A signature that takes strings (encoded images) gets no prediction: an empty string is no
    JPEG, and kit never invents bytes; its metadata answered (the build's smoke step ran real samples)."""
    base = f"http://{address}:{port}/v1/models/{model}"
    meta = _http_json(base + "/metadata", timeout=timeout, slot=slot)
    sigs = ((meta.get("metadata") or {}).get("signature_def") or {}).get("signature_def") or {}
    name = "serving_default" if "serving_default" in sigs else next(iter(sigs), None)
    if name is None:
        raise RolloutError(f"{base}/metadata lists no signature")
    tensors = sigs[name].get("inputs") or {}
    strings = sorted(key for key, t in tensors.items() if t.get("dtype") == "DT_STRING")
    if strings:
        return {"skipped": f"signature {name} takes strings ({', '.join(strings)}): metadata only"}
    inputs = {key: [zero_example(t)] for key, t in tensors.items()}
    body = _http_json(base + ":predict", {"signature_name": name, "inputs": inputs}, timeout=timeout, slot=slot)
    outputs = body.get("outputs", body.get("predictions"))
    if "error" in body or not outputs:
        raise RolloutError(f"smoke prediction on {base} gave no outputs: {str(body)[:200]}")
    return body


def grpc_smoke(address: str, port: int, model: str, timeout: float = SMOKE_TIMEOUT) -> None:
    """The gRPC side answers: KServe v2 ServerReady and ModelReady are true."""
    try:
        import grpc
    except ImportError as e:
        raise RolloutError("the image serves gRPC but grpcio is not installed here", hint="pip install grpcio") from e
    from kit.runtime.serving.grpc_messages import messages

    m = messages()
    target = f"{address}:{port}"
    with grpc.insecure_channel(target) as channel:
        def call(method, request, response):
            rpc = channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                      request_serializer=m["inference." + request].SerializeToString,
                                      response_deserializer=m["inference." + response].FromString)
            return rpc(m["inference." + request](**({"name": model} if method == "ModelReady" else {})),
                       timeout=timeout)
        try:
            ready = call("ServerReady", "ServerReadyRequest", "ServerReadyResponse").ready
            model_ready = call("ModelReady", "ModelReadyRequest", "ModelReadyResponse").ready
        except grpc.RpcError as e:
            raise RolloutError(f"gRPC on {target}: {e.code().name}: {e.details()}") from e
    if not (ready and model_ready):
        raise RolloutError(f"gRPC on {target} says not ready (server {ready}, model {model_ready})")
