"""The model server inside the runtime image (Python 3.6, TF >= 2.3): the
HTTP transport, the TF Serving and KServe v2 protocols, micro-batching,
metrics, the health probe. Entry point: python3 -m kit.runtime.serving.main."""
