"""`kit serve --local`: the runtime server on this host, from a model manifest.

The runtime code (kit/runtime) is the same that runs in the images; here it
runs under the host's Python and TensorFlow, in its own process, in the
foreground (Ctrl-C drains and stops it). kit/serve/bench.py (kit bench) uses
the same arguments and environment.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from kit.errors import PreflightError, UsageError
from kit.runtime.logtap import engine_build_vmodule


def require_tensorflow() -> None:
    """--local runs the model with this host's TensorFlow: say so when there is none."""
    if importlib.util.find_spec("tensorflow") is None:
        raise PreflightError("TensorFlow is not installed on this host, and --local runs the model here",
                             hint="pip install 'kit[tf]' (tensorflow-cpu), or run the runtime image instead")


def _duration_arg(seconds: float) -> str:
    return format(round(float(seconds) * 1000, 6), "g") + "ms"


def input_shapes_arg(manifest) -> str:
    """The manifest's per-example input shapes as the runtime's --input-shapes value."""
    parts = []
    for name, spec in (manifest.model.inputs or {}).items():
        dims = [d for d in spec.shape]
        if dims and all(isinstance(d, int) and d > 0 for d in dims):
            parts.append(f"{name}={','.join(str(d) for d in dims)}")
    return ";".join(parts)


def model_version(manifest) -> str:
    """TF Serving clients expect an integer version: the manifest's when it is one, else 1."""
    return str(int(manifest.version)) if str(manifest.version).isdigit() else "1"


def runtime_args(manifest, model_dir: Path | None = None, port: int | None = None,
                 host: str = "127.0.0.1", grpc_port: int | None = None, warmup: bool = True) -> list[str]:
    """`python -m kit.runtime.serving.main` arguments for a manifest (defaults: its model and serve section)."""
    args = [
        "--model-dir", str(model_dir or manifest.model.path),
        "--model-name", manifest.model_name,
        "--model-version", model_version(manifest),
        "--signature", manifest.model.signature,
        "--host", host,
        "--port", str(manifest.serve.port if port is None else port),
        "--grpc-port", str(manifest.serve.grpc_port if grpc_port is None else grpc_port),
        "--batch-sizes", ",".join(str(b) for b in manifest.optimize.batch_sizes),
        "--max-batch-delay", _duration_arg(manifest.serve.max_batch_delay),
        "--max-queue", str(manifest.serve.max_queue),
    ]
    for name, value in manifest.serve.limit_settings().items():  # KIT_MAX_BODY -> --max-body
        args += ["--" + name[len("KIT_"):].lower().replace("_", "-"), value]
    shapes = input_shapes_arg(manifest)
    if shapes:
        args += ["--input-shapes", shapes]
    if not (warmup and manifest.serve.warmup):
        args.append("--no-warmup")
    elif manifest.serve.warmup_samples:
        args += ["--warmup-samples", str(manifest.serve.warmup_samples)]
    return args


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                             hint="pick a free port with --port") from None


def runtime_env() -> dict:
    """The environment of a kit.runtime process started from this host."""
    env = dict(os.environ)
    # The server imports kit.runtime from this checkout/installation, whatever the cwd.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # As in the runtime image: without this VLOG, TF 2.3.1 never prints an engine built at run time,
    # and the server's kit_trt_engine_builds_total would stay 0 through a 30-minute first request.
    # VLOG lines pass only at TF_CPP_MIN_LOG_LEVEL 0 (a level the user set is kept: it hides them).
    env["TF_CPP_VMODULE"] = engine_build_vmodule(env.get("TF_CPP_VMODULE"))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    return env


def serve_local(manifest, port: int | None = None, host: str = "127.0.0.1", announce=None,
                grpc_port: int | None = None, warmup: bool = True) -> int:
    """Run the model server on this host in the foreground; returns its exit code."""
    require_tensorflow()
    port = manifest.serve.port if port is None else port
    grpc_port = manifest.serve.grpc_port if grpc_port is None else grpc_port
    if grpc_port and grpc_port == port:
        raise UsageError(f"the HTTP and gRPC ports are both {port}", hint="pick another --grpc-port, or 0 for no gRPC")
    _check_port_free(host, port)
    if grpc_port:
        _check_port_free(host, grpc_port)
    args = runtime_args(manifest, port=port, host=host, grpc_port=grpc_port, warmup=warmup)
    env = dict(runtime_env(), KIT_PARENT_PID=str(os.getpid()))
    if announce and env["TF_CPP_MIN_LOG_LEVEL"].strip() not in ("", "0"):
        announce(f"warning: TF_CPP_MIN_LOG_LEVEL={env['TF_CPP_MIN_LOG_LEVEL']} hides TensorFlow's VLOG lines: "
                 "engines TF-TRT builds at run time will not be logged or counted (unset it, or set 0)")
    if announce:
        base = f"http://{host}:{port}"
        name = manifest.model_name
        announce(f"serving {name} from {manifest.model.path}")
        announce(f"  TF Serving REST  POST {base}/v1/models/{name}:predict")
        announce(f"  KServe v2        POST {base}/v2/models/{name}/infer")
        announce(f"  health           GET  {base}/v2/health/ready    metrics GET {base}/metrics")
        if grpc_port:
            announce(f"  gRPC             {host}:{grpc_port}  (tensorflow.serving.PredictionService, "
                     "ModelService; inference.GRPCInferenceService)")
        announce("Ctrl-C stops it (requests in flight finish first)")
    # The server stops when kit dies, even by SIGKILL (it watches KIT_PARENT_PID, see main.py).
    proc = subprocess.Popen([sys.executable, "-m", "kit.runtime.serving.main"] + args, env=env)

    def forward(signum, _frame):
        # SIGTERM/SIGINT to kit reach the server, which drains and exits 0 (a terminal's
        # Ctrl-C reaches both; the server treats a second signal as the same request).
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
