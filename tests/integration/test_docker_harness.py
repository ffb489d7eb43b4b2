"""The Docker layer for real: kit.docker_api against the running engine, on
kit's offline Debian base; DockerError rendering through the CLI; `kit base`
reuse and atomicity."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from kit.cli import application as cli
from kit.docker_api import Download, Mount, Upload, compose_command, connect
from kit.errors import EXIT_DOCKER, DockerError

# A small program whose output the test can check independently.
PRIMES = """\
import sys
n = int(sys.argv[1])
primes = [p for p in range(2, n) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
for p in primes[:3]:
    print("prime", p, flush=True)
print("count", len(primes), "sum", sum(primes), flush=True)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""

# Serves GET /square?x=N -> {"x": N, "square": N*N} on 127.0.0.1:$PORT.
SERVER = """\
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse, parse_qs

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            body = b"ok"
        else:
            x = int(parse_qs(url.query)["x"][0])
            body = json.dumps({"x": x, "square": x * x, "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        print("request", self.path, flush=True)

print("listening", os.environ["PORT"], flush=True)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY app/ /opt/app/
HEALTHCHECK --interval=1s --timeout=3s --retries=30 \\
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=2)"]
CMD ["python3", "/opt/app/server.py"]
"""


def expected_primes(n: int) -> tuple[int, int]:
    ps = [p for p in range(2, n) if all(p % d for d in range(2, int(p**0.5) + 1))]
    return len(ps), sum(ps)


@pytest.fixture(scope="module")
def app_image(engine, debian_base, tmp_path_factory):
    """A tiny image on the debootstrapped base, built once for this module."""
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "app").mkdir()
    (ctx / "app" / "primes.py").write_text(PRIMES)
    (ctx / "app" / "server.py").write_text(SERVER)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    ref = f"kit-test/harness-app:{int(time.time() * 1000)}"
    lines: list[str] = []
    engine.build(str(ctx), tag=ref, buildargs={"BASE": debian_base}, labels={"kit.test": "harness"},
                 on_line=lines.append)
    yield ref, lines
    engine.remove_image(ref, force=True)


def test_engine_info_describes_this_engine(engine):
    info = engine.info()
    assert info.architecture in ("amd64", "arm64")
    assert info.server_version and info.api_version
    assert "runc" in info.runtimes
    assert info.has_nvidia == ("nvidia" in info.runtimes)
    assert info.cpus >= 1 and info.memory_bytes > 0
    # Labels and live-restore, as the docker CLI reads them from the same engine.
    import subprocess

    cli_view = json.loads(subprocess.run(["docker", "info", "--format", "{{json .}}"], capture_output=True,
                                         text=True, check=True).stdout)
    assert info.live_restore is bool(cli_view["LiveRestoreEnabled"])
    assert info.labels == dict(item.split("=", 1) for item in cli_view.get("Labels") or ())


def test_build_streams_log_and_records_labels_and_layers(engine, debian_base, app_image):
    ref, lines = app_image
    # The legacy builder's log arrived line by line, steps in order.
    steps = [ln for ln in lines if ln.startswith("Step ")]
    assert steps[0].startswith("Step 1/") and any("COPY app/ /opt/app/" in s for s in steps)
    assert all("\n" not in ln for ln in lines)
    img = engine.image_inspect(ref)
    base = engine.image_inspect(debian_base)
    assert img.labels["kit.test"] == "harness"
    assert img.labels["kit.python"] == base.labels["kit.python"]  # inherited from the imported base
    # COPY added exactly one layer on top of the base's.
    layers = engine.layer_digests(ref)
    assert layers[: len(base.layers)] == list(base.layers)
    assert len(layers) == len(base.layers) + 1
    assert ref in img.tags and engine.image_exists(ref)


def test_run_to_completion_streams_output_and_returns_exit_code(engine, app_image):
    ref, _ = app_image
    seen: list[str] = []
    result = engine.run_to_completion(ref, ["python3", "/opt/app/primes.py", "100"], on_line=seen.append,
                                      timeout=60)
    count, total = expected_primes(100)
    assert result.exit_code == 0
    assert seen == ["prime 2", "prime 3", "prime 5", f"count {count} sum {total}"]
    assert result.logs.splitlines() == seen
    failing = engine.run_to_completion(ref, ["python3", "/opt/app/primes.py", "10", "3"], timeout=60)
    assert failing.exit_code == 3
    assert failing.logs.splitlines()[-1] == "count 4 sum 17"


def test_run_to_completion_kills_a_container_that_overruns(engine, app_image, throwaway):
    ref, _ = app_image
    name = throwaway.container("sleeper")
    with pytest.raises(DockerError, match="did not finish within 2s"):
        engine.run_to_completion(ref, ["python3", "-c", "import time; print('started', flush=True); time.sleep(60)"],
                                 timeout=2, name=name)
    assert not [c for c in engine.containers() if c.name == name]  # killed and removed


def test_server_on_host_network_answers_and_turns_healthy(engine, app_image, throwaway, free_port):
    ref, _ = app_image
    name = throwaway.container("server")
    cid = engine.run(ref, name=name, env={"PORT": str(free_port)}, labels={"kit.test": "server"})
    state = engine.wait_healthy(cid, timeout=60)
    assert state.health == "healthy" and state.status == "running" and state.name == name
    with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/square?x=12", timeout=5) as r:
        body = json.loads(r.read())
    assert body["x"] == 12 and body["square"] == 144
    assert [c.name for c in engine.containers(labels={"kit.test": "server"})] == [name]
    engine.stop(cid, timeout=2)
    assert "request /square?x=12" in engine.logs(cid)
    assert engine.container_state(cid).status == "exited"


def test_read_only_bind_mount_is_readable_not_writable(engine, app_image, tmp_path):
    ref, _ = app_image
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("41")
    script = ("import sys\n"
              "print(int(open('/data/in.txt').read()) + 1)\n"
              "try:\n    open('/data/out.txt', 'w')\nexcept OSError as e:\n    print('refused', e.errno)\n")
    result = engine.run_to_completion(ref, ["python3", "-c", script], mounts=[Mount(str(data), "/data", True)],
                                      timeout=60)
    assert result.exit_code == 0, result.logs
    assert result.logs.splitlines() == ["42", "refused 30"]  # EROFS
    assert not (data / "out.txt").exists()
    writable = engine.run_to_completion(
        ref, ["python3", "-c", "open('/data/out.txt', 'w').write('x')"], mounts=[(str(data), "/data")], timeout=60)
    assert writable.exit_code == 0 and (data / "out.txt").read_text() == "x"


def test_uploads_and_downloads_go_through_the_api_not_the_filesystem(engine, app_image, tmp_path):
    """What kit build does with the model and /out: copied in before start, copied back after exit,
    as a non-root user that owns the empty /out it was given, whatever the exit code."""
    ref, _ = app_image
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(bytes(range(256)) * 40)
    (model / "variables" / "v.data").write_text("41")
    (tmp_path / "spec.json").write_text('{"k": 1}')
    script = ("import json, os, sys\n"
              "n = int(open('/in/m/variables/v.data').read()) + len(open('/in/m/saved_model.pb', 'rb').read())\n"
              "os.makedirs('/out/model')\n"
              "open('/out/model/answer.txt', 'w').write(str(n))\n"
              "json.dump({'uid': os.getuid(), 'spec': json.load(open('/in/spec.json'))}, open('/out/r.json', 'w'))\n"
              "sys.exit(5)\n")
    out = tmp_path / "back"
    result = engine.run_to_completion(
        ref, ["python3", "-c", script], timeout=60, user="4321:4321",
        uploads=[Upload(str(model), "/in/m"), Upload(str(tmp_path / "spec.json"), "/in/spec.json"),
                 Upload(None, "/out")],
        downloads=[Download("/out", str(out))])
    assert result.exit_code == 5, result.logs
    assert (out / "model" / "answer.txt").read_text() == str(41 + 256 * 40)
    assert json.loads((out / "r.json").read_text()) == {"uid": 4321, "spec": {"k": 1}}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["model", "model/answer.txt", "r.json"]


def test_failed_build_raises_with_log_tail_and_tags_nothing(engine, debian_base, tmp_path, throwaway):
    (tmp_path / "Dockerfile").write_text(f"FROM {debian_base}\nRUN echo about-to-fail && exit 7\n")
    ref = throwaway.image("broken")
    with pytest.raises(DockerError) as info:
        engine.build(str(tmp_path), tag=ref)
    assert "returned a non-zero code: 7" in info.value.message
    assert any("about-to-fail" in line for line in info.value.details)
    assert not engine.image_exists(ref)


def test_build_on_a_missing_base_says_what_to_do(engine, tmp_path, throwaway):
    (tmp_path / "Dockerfile").write_text("FROM kit-test/absent-base:never\n")
    with pytest.raises(DockerError) as info:
        engine.build(str(tmp_path), tag=throwaway.image("orphan"))
    assert "kit-test/absent-base" in info.value.message
    assert "kit base" in (info.value.hint or "")


def test_container_that_cannot_start_leaves_nothing_behind(engine, debian_base, throwaway):
    name = throwaway.container("nostart")
    with pytest.raises(DockerError, match="no-such-binary"):
        engine.run(debian_base, ["/no-such-binary"], name=name)
    assert not [c for c in engine.containers() if c.name == name]


def test_import_tag_remove_roundtrip(engine, tmp_path, throwaway):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        payload = b"kit\n"
        member = tarfile.TarInfo("etc/kit-marker")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    raw = buf.getvalue()
    ref = throwaway.image("imported")
    image_id = engine.import_tarball((raw[i:i + 512] for i in range(0, len(raw), 512)), ref,
                                     changes=["LABEL kit.test=import"])
    info = engine.image_inspect(ref)
    assert info.id == image_id and info.labels == {"kit.test": "import"} and len(info.layers) == 1
    alias = throwaway.image("alias")
    engine.tag(ref, alias)
    assert engine.image_inspect(alias).id == image_id
    engine.remove_image(alias)
    assert not engine.image_exists(alias) and engine.image_exists(ref)


def test_compose_command_works_here():
    argv = compose_command()
    assert argv in (["docker", "compose"], ["docker-compose"])
    import subprocess

    assert subprocess.run(argv + ["version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE).returncode == 0


# ---- errors through the CLI: rendered once, exit 4, no traceback ------------------------------


@pytest.mark.parametrize("host", ["unix:///nonexistent.sock", "tcp://127.0.0.1:1"])
def test_unreachable_endpoint_through_cli(host, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", host)
    code = cli.main(["base"])
    captured = capsys.readouterr()
    assert code == EXIT_DOCKER
    assert "Traceback" not in captured.err + captured.out
    assert f"no Docker engine answers at {host}" in captured.err
    assert "fix:" in captured.err


def test_bad_endpoint_scheme_is_a_docker_error():
    with pytest.raises(DockerError, match="not a Docker endpoint"):
        connect("ftp://example")


@pytest.fixture
def inspect_command():
    """A throwaway `kit _inspect REF` command: lets main() render the engine's
    real missing-image error without depending on another command's flow."""

    def _inspect(ref: str):
        with connect() as engine:
            cli.out.print(engine.image_inspect(ref).id)

    cli.app.command("_inspect", hidden=True)(_inspect)
    yield
    cli.app.registered_commands = [c for c in cli.app.registered_commands if c.name != "_inspect"]


def test_missing_image_through_cli(engine, inspect_command, capsys):
    code = cli.main(["_inspect", "kit-test/missing-image:nope"])
    captured = capsys.readouterr()
    assert code == EXIT_DOCKER
    assert "Traceback" not in captured.err + captured.out
    assert "image not found" in captured.err and "kit-test/missing-image:nope" in captured.err
    assert "fix:" in captured.err and "kit base" in captured.err


# ---- `kit base` --------------------------------------------------------------------------------


def test_kit_base_reuses_present_bases(tf_base, capsys):
    # The tf_base fixture made sure both exist; kit base must not rebuild them.
    start = time.monotonic()
    assert cli.main(["base", "--json"]) == 0
    seconds = time.monotonic() - start
    result = json.loads(capsys.readouterr().out)
    assert result["debian"]["reused"] and result["tensorflow"]["reused"]
    assert result["tensorflow"]["image"] == tf_base
    assert result["tensorflow"]["tensorflow"] == "2.17.1" and result["tensorflow"]["python"] == "3.11"
    assert seconds < 10, f"reuse took {seconds:.1f}s"
    assert cli.main(["base"]) == 0
    text = capsys.readouterr().out
    assert "kit/debian-python:bookworm: present, reused" in text
    assert f"{tf_base}: present, reused" in text


def test_tf_base_carries_labels_and_imports_tensorflow(engine, tf_base):
    info = engine.image_inspect(tf_base)
    assert info.labels["kit.stack"] == "cpu" and info.labels["kit.tensorflow"] == "2.17.1"
    assert info.labels["org.opencontainers.image.version"] == "2.17.1"
    assert info.env["PATH"].startswith("/opt/kit/venv/bin:") and info.env["PYTHONDONTWRITEBYTECODE"] == "1"
    result = engine.run_to_completion(
        tf_base, ["python", "-c", "import sys, tensorflow as tf, numpy; print(sys.prefix, tf.__version__, "
                  "tf.reduce_sum(tf.constant([1.5, 2.5])).numpy())"],
        env={"TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.exit_code == 0, result.logs
    assert result.logs.strip().splitlines()[-1] == "/opt/kit/venv 2.17.1 4.0"
    # The wheels never became a layer: the install stage was a separate stage.
    ls = engine.run_to_completion(tf_base, ["sh", "-c", "ls /tmp/wheels 2>&1 || true"], timeout=60)
    assert "No such file" in ls.logs


def test_kit_base_with_unknown_tensorflow_fails_cleanly_and_tags_nothing(engine, debian_base, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    code = cli.main(["base", "--tensorflow", "0.0.1"])
    captured = capsys.readouterr()
    assert code == 1
    assert "pip download of tensorflow-cpu==0.0.1 failed" in captured.err
    assert "Traceback" not in captured.err
    assert not engine.image_exists("kit/tf-cpu-base:tf0.0.1")
    # No half-written wheel cache and no leftover build context.
    wheels = tmp_path / "cache" / "wheels"
    assert not wheels.exists() or list(wheels.iterdir()) == []
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["wheels"]


def test_kit_base_rejects_a_malformed_version(capsys):
    assert cli.main(["base", "--tensorflow", "latest"]) == 2
    assert "--tensorflow must be a full version" in capsys.readouterr().err


def test_leftover_temporary_tags_are_cleared_before_a_build(engine, debian_base, tmp_path, monkeypatch):
    from kit.build.base import tf_base
    from kit.errors import KitError

    # A killed run leaves its temporary tag behind; the next build (under the lock) removes it.
    stale = "kit/tf-cpu-base:tf0.0.2-tmp-stale000"
    engine.tag(debian_base, stale)
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    try:
        with pytest.raises(KitError, match="pip download of tensorflow-cpu==0.0.2 failed"):
            tf_base(engine, "0.0.2")
        assert not engine.image_exists(stale)
        assert engine.image_exists(debian_base)  # only the stale name went, not the image under it
    finally:
        engine.remove_image(stale)
