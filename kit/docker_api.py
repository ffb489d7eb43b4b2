"""The one module that talks to Docker.

Everything else in kit goes through `connect()` and the small, explicit
methods of `Engine`; nothing else imports the docker SDK. Every failure
becomes a DockerError carrying the daemon's own message and a hint.
When the docker CLI is needed (compose), it is called with argv lists,
never through a shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from kit.errors import DockerError
from kit.imageref import split_ref

LineCallback = Callable[[str], None]

DEFAULT_TIMEOUT = 120  # seconds for an ordinary API call; long streams set their own

HINT_START_ENGINE = (
    "start it: dockerd --bridge=none --iptables=false --ip-masq=false "
    "(as root, in the background), or bash scripts/setup-host"
)
HINT_PERMISSION = (
    "your user may not use the Docker socket: run as root, or add the user to the "
    "'docker' group (usermod -aG docker $USER) and log in again"
)


# ---- results -----------------------------------------------------------------


@dataclass(frozen=True)
class EngineInfo:
    """What kit needs to know about a Docker engine."""

    host: str
    server_version: str
    api_version: str
    architecture: str  # docker/OCI name: amd64, arm64
    os: str
    kernel: str
    runtimes: tuple[str, ...]
    default_runtime: str
    memory_bytes: int
    cpus: int
    labels: dict = field(default_factory=dict)  # the engine's own labels (dockerd --label k=v)
    live_restore: bool | None = None  # containers survive a dockerd restart; None: engine did not say
    swarm_node_id: str = ""  # docker info's Swarm.NodeID ("" when not in a swarm)
    swarm_state: str = ""  # Swarm.LocalNodeState: inactive | pending | active | error | locked

    @property
    def has_nvidia(self) -> bool:
        return "nvidia" in self.runtimes


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    repo_digests: tuple[str, ...]  # "repo@sha256:..."
    labels: dict = field(default_factory=dict)
    layers: tuple[str, ...] = ()  # RootFS layer digests (uncompressed diff ids), base first
    size: int = 0
    architecture: str = ""
    created: str = ""
    config: dict = field(default_factory=dict)  # the image's Config: Env, Cmd, Healthcheck, Labels, User...

    @property
    def env(self) -> dict:
        return dict(item.partition("=")[::2] for item in (self.config.get("Env") or ()))

    def digest_for(self, repository: str) -> str | None:
        """The registry digest recorded for `repository`, if it was pushed/pulled."""
        for rd in self.repo_digests:
            repo, _, digest = rd.partition("@")
            if repo == repository:
                return digest
        return None


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # created | running | exited | dead | ...
    health: str | None  # starting | healthy | unhealthy; None without a HEALTHCHECK
    exit_code: int | None
    oom_killed: bool
    labels: dict = field(default_factory=dict)
    image: str = ""


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    logs: str
    oom_killed: bool = False


@dataclass(frozen=True)
class Mount:
    """A bind mount: `source` at container `target`. The source is a path ON THE ENGINE'S
    machine: only for device files (/etc/nv_tegra_release), never for this host's files
    (an ssh:// or tcp:// engine does not see them; copy those in with Upload)."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Upload:
    """A file or directory of THIS host copied to `target` in a container before it starts
    (the archive API: works whatever machine the engine runs on). source None: an empty
    directory the container's user owns, for what the container writes (see Download)."""

    source: str | None
    target: str


@dataclass(frozen=True)
class Download:
    """What a finished container left in its directory `source`, copied into this host's
    directory `target` (created) before the container is removed."""

    source: str
    target: str


# ---- errors --------------------------------------------------------------------


def _daemon_message(e: BaseException) -> str:
    explanation = getattr(e, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation).strip()
    return str(e).strip() or type(e).__name__


def _is_unreachable(e: BaseException) -> bool:
    import requests

    text = str(e)
    if isinstance(e, (requests.exceptions.ConnectionError, FileNotFoundError, ConnectionRefusedError)):
        return True
    return any(s in text for s in ("Connection refused", "No such file or directory", "Connection aborted",
                                   "Error while fetching server API version", "Name or service not known",
                                   "ssh: ", "Cannot connect"))


def as_docker_error(e: BaseException, doing: str, host: str) -> DockerError:
    """Turn any SDK / requests exception into a DockerError with a useful hint."""
    import docker.errors as de
    import requests

    if isinstance(e, DockerError):
        return e
    msg = _daemon_message(e)
    if isinstance(e, de.ImageNotFound) or (isinstance(e, de.NotFound) and "image" in msg.lower()):
        return DockerError(f"{doing}: image not found: {msg}",
                           hint="build it first (kit base / kit build), or pull it from a registry you can reach")
    if isinstance(e, de.NotFound):
        return DockerError(f"{doing}: not found: {msg}")
    if isinstance(e, PermissionError) or "permission denied" in msg.lower():
        return DockerError(f"{doing}: permission denied talking to the Docker engine at {host}: {msg}",
                           hint=HINT_PERMISSION)
    if isinstance(e, requests.exceptions.ReadTimeout):
        return DockerError(f"{doing}: the Docker engine at {host} did not answer in time: {msg}",
                           hint="the engine may be overloaded or hung; check `docker info` and its log")
    if isinstance(e, de.APIError):
        return DockerError(f"{doing}: the Docker engine refused: {msg}")
    if "paramiko" in msg:
        return DockerError(f"{doing}: ssh:// endpoints need the paramiko package", hint="pip install 'docker[ssh]'")
    if _is_unreachable(e):
        msg = msg.replace("Error while fetching server API version: ", "")
        hint = HINT_START_ENGINE
        if host.startswith("ssh://"):
            hint = (f"check that `ssh {host[len('ssh://'):]} docker version` works from this machine "
                    "(keys, known_hosts) and that the device's Docker engine runs")
        elif host.startswith("tcp://"):
            hint = f"check that a Docker engine listens at {host} and that it is reachable from here"
        return DockerError(f"no Docker engine answers at {host} ({doing}): {msg}", hint=hint)
    return DockerError(f"{doing}: {msg}")


@contextlib.contextmanager
def translate_errors(doing: str, host: str):
    """Any docker SDK / transport exception inside becomes a DockerError."""
    import docker.errors as de
    import requests

    try:
        yield
    except DockerError:
        raise
    except (de.DockerException, requests.exceptions.RequestException, OSError) as e:
        raise as_docker_error(e, doing, host) from e


_errors = translate_errors  # short internal name


def _engine_labels(items) -> dict:
    """`docker info` Labels ("key=value" strings) as a dict."""
    out = {}
    for item in items or ():
        key, _, value = str(item).partition("=")
        out[key.strip()] = value.strip()
    return out


def repository_and_tag(ref: str) -> tuple[str, str | None]:
    """(repository, tag) as the engine API's push, pull, tag and import take them:
    a digest reference stays whole (tag None), like a bare name."""
    repository, tag, digest = split_ref(ref)
    return (ref, None) if digest else (repository, tag)


class LineSplitter:
    """Feeds text chunks in, calls `emit` once per complete line."""

    def __init__(self, emit: LineCallback | None):
        self.emit = emit
        self.buf = ""
        self.lines: list[str] = []

    def feed(self, text: str) -> None:
        self.buf += text.replace("\r\n", "\n")
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self._line(line)

    def close(self) -> None:
        if self.buf:
            self._line(self.buf)
            self.buf = ""

    def _line(self, line: str) -> None:
        self.lines.append(line)
        if self.emit is not None:
            self.emit(line)


# ---- connecting ------------------------------------------------------------------


def default_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(host: str | None = None, timeout: int = DEFAULT_TIMEOUT) -> "Engine":
    """Connect to a Docker engine and check that it answers.

    host: unix:///path, tcp://h:p, ssh://user@h (uses the ssh binary and your
    ssh config); None means DOCKER_HOST or the default socket.
    """
    import docker

    shown = host or default_host()
    if host and not host.startswith(("unix://", "tcp://", "ssh://", "npipe://", "http://", "https://")):
        raise DockerError(f"not a Docker endpoint: {host!r}",
                          hint="use unix:///var/run/docker.sock, tcp://HOST:2375 or ssh://user@host")
    with _errors("connecting", shown):
        if host is None:
            client = docker.from_env(timeout=timeout)
        else:
            client = docker.DockerClient(base_url=host, timeout=timeout,
                                         use_ssh_client=host.startswith("ssh://"))
    engine = Engine(client, shown)
    engine.ping()
    return engine


class _Connection:
    """The connection to one engine and what the engine says about itself."""

    def __init__(self, client, host: str):
        self.client = client
        self.api = client.api
        self.host = host

    # -- engine ---------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ping(self) -> None:
        with _errors("ping", self.host):
            self.api.ping()

    def info(self) -> EngineInfo:
        with _errors("info", self.host):
            info = self.api.info()
            version = self.api.version()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(info.get("Architecture", ""), info.get("Architecture", ""))
        return EngineInfo(
            host=self.host,
            server_version=version.get("Version", ""),
            api_version=version.get("ApiVersion", ""),
            architecture=arch,
            os=info.get("OperatingSystem", ""),
            kernel=info.get("KernelVersion", ""),
            runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
            default_runtime=info.get("DefaultRuntime", ""),
            memory_bytes=int(info.get("MemTotal") or 0),
            cpus=int(info.get("NCPU") or 0),
            labels=_engine_labels(info.get("Labels")),
            live_restore=None if info.get("LiveRestoreEnabled") is None else bool(info["LiveRestoreEnabled"]),
            swarm_node_id=(info.get("Swarm") or {}).get("NodeID") or "",
            swarm_state=(info.get("Swarm") or {}).get("LocalNodeState") or "",
        )


class _Images(_Connection):
    """Images: inspect, build, import, tag, push, pull, remove."""


    def image_exists(self, ref: str) -> bool:
        import docker.errors as de

        try:
            with _errors(f"inspecting image {ref}", self.host):
                self.api.inspect_image(ref)
            return True
        except DockerError as e:
            if isinstance(e.__cause__, de.NotFound):
                return False
            raise

    def image_inspect(self, ref: str) -> ImageInfo:
        with _errors(f"inspecting image {ref}", self.host):
            d = self.api.inspect_image(ref)
        return ImageInfo(
            id=d["Id"],
            tags=tuple(d.get("RepoTags") or ()),
            repo_digests=tuple(d.get("RepoDigests") or ()),
            labels=dict((d.get("Config") or {}).get("Labels") or {}),
            layers=tuple((d.get("RootFS") or {}).get("Layers") or ()),
            size=int(d.get("Size") or 0),
            architecture=d.get("Architecture", ""),
            created=d.get("Created", ""),
            config=dict(d.get("Config") or {}),
        )

    def distribution_digest(self, ref: str) -> str:
        """The registry's manifest digest for `ref`, asked through the engine
        (its registry settings and the docker config's credentials apply)."""
        with _errors(f"asking the registry for {ref}", self.host):
            data = self.api.inspect_distribution(ref)
        digest = ((data or {}).get("Descriptor") or {}).get("digest", "")
        if not digest.startswith("sha256:"):
            raise DockerError(f"the registry gave no digest for {ref}")
        return digest

    def image_refs(self, pattern: str) -> list[str]:
        """Tags matching a reference pattern, e.g. "kit/debian-python:bookworm-tmp-*"."""
        import fnmatch

        with _errors(f"listing images {pattern}", self.host):
            found = self.api.images(filters={"reference": pattern})
        return sorted(t for img in found for t in (img.get("RepoTags") or ()) if fnmatch.fnmatch(t, pattern))

    def layer_digests(self, ref: str) -> list[str]:
        """RootFS layer digests, base first (the last is the image's top layer)."""
        return list(self.image_inspect(ref).layers)

    def build(
        self,
        path: str,
        tag: str,
        dockerfile: str | None = None,
        buildargs: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        on_line: LineCallback | None = None,
        nocache: bool = False,
        timeout: int = 3600,
    ) -> str:
        """Build `path` (the context) into `tag`; returns the image id.

        The build log is streamed to `on_line` line by line. Builds use the host
        network (the default bridge may not exist) and never pull the base:
        bases are assembled offline and must already be present.
        """
        splitter = LineSplitter(on_line)
        image_id = None
        doing = f"building {tag}"
        with _errors(doing, self.host):
            stream = self.api.build(
                path=str(path), dockerfile=str(dockerfile) if dockerfile else None, tag=tag,
                buildargs=dict(buildargs or {}), labels=dict(labels or {}), network_mode="host",
                rm=True, forcerm=True, pull=False, nocache=nocache, decode=True, timeout=timeout,
            )
            for chunk in stream:
                if "stream" in chunk:
                    splitter.feed(chunk["stream"])
                if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if "error" in chunk:
                    splitter.close()
                    tail = [ln for ln in splitter.lines if ln.strip()][-15:]
                    base = failed_base_image(splitter.lines, buildargs or {})
                    if base:  # the engine tried to pull a FROM image it does not have
                        raise DockerError(f"{doing}: base image {base} is not on this engine and could not be "
                                          f"pulled: {chunk['error'].strip()}", details=tail,
                                          hint=f"make {base} available first: `kit base` builds kit's CPU bases; "
                                          "other bases must be loaded (docker load) or pulled from a reachable "
                                          "registry")
                    raise DockerError(f"{doing}: {chunk['error'].strip()}", details=tail,
                                      hint=_build_hint(chunk["error"]))
        splitter.close()
        if image_id is None:  # older engines only print "Successfully built <id>"
            image_id = self.image_inspect(tag).id
        return image_id

    def import_tarball(self, data: Iterable[bytes] | str, ref: str, changes: Sequence[str] | None = None) -> str:
        """`docker import`: a rootfs tarball (a path, or an iterator of byte
        chunks streamed without buffering) becomes image `ref`; returns its id."""
        repo, tag = repository_and_tag(ref)
        doing = f"importing {ref}"
        with _errors(doing, self.host):
            if isinstance(data, (str, os.PathLike)):
                raw = self.api.import_image_from_file(str(data), repository=repo, tag=tag, changes=changes)
            else:
                raw = self.api.import_image_from_data(data, repository=repo, tag=tag, changes=changes)
        image_id = None
        for line in str(raw).splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("error"):
                raise DockerError(f"{doing}: {msg['error']}")
            if str(msg.get("status", "")).startswith("sha256:"):
                image_id = msg["status"]
        return image_id or self.image_inspect(ref).id

    def tag(self, ref: str, new_ref: str) -> None:
        repo, tag = repository_and_tag(new_ref)
        with _errors(f"tagging {ref} as {new_ref}", self.host):
            if not self.api.tag(ref, repo, tag or "latest", force=True):
                raise DockerError(f"tagging {ref} as {new_ref} failed")

    def remove_image(self, ref: str, force: bool = False, missing_ok: bool = True) -> None:
        if missing_ok and not self.image_exists(ref):
            return
        with _errors(f"removing image {ref}", self.host):
            self.api.remove_image(ref, force=force, noprune=False)

    def prune_images(self, labels: Mapping[str, str]) -> int:
        """Remove untagged images carrying all `labels` (e.g. a build's
        intermediate stage); returns the bytes reclaimed."""
        filters = {"dangling": True, "label": [f"{k}={v}" for k, v in labels.items()]}
        with _errors("removing untagged build images", self.host):
            result = self.api.prune_images(filters=filters)
        return int((result or {}).get("SpaceReclaimed") or 0)

    def push(self, ref: str, on_line: LineCallback | None = None) -> str:
        """Push `ref`; returns the registry digest ("sha256:..."). Credentials
        come from the docker config file; they are never printed."""
        repo, tag = repository_and_tag(ref)
        doing = f"pushing {ref}"
        digest = None
        with _errors(doing, self.host):
            for msg in self.api.push(repo, tag=tag, stream=True, decode=True):
                if msg.get("error"):
                    raise DockerError(f"{doing}: {msg['error'].strip()}", hint=_registry_hint(msg["error"]))
                aux = msg.get("aux")
                if isinstance(aux, dict) and aux.get("Digest"):
                    digest = aux["Digest"]
                status = msg.get("status")
                if status and on_line is not None:
                    line = f"{msg['id']}: {status}" if msg.get("id") else status
                    if not msg.get("progressDetail"):  # skip per-byte progress noise
                        on_line(line)
                if status and "digest: sha256:" in status and digest is None:
                    digest = status.split("digest: ", 1)[1].split()[0]
        if not digest:
            raise DockerError(f"{doing}: the registry returned no digest")
        return digest

    def pull(self, ref: str, on_line: LineCallback | None = None) -> ImageInfo:
        repo, tag = repository_and_tag(ref)
        doing = f"pulling {ref}"
        with _errors(doing, self.host):
            for msg in self.api.pull(repo, tag=tag, stream=True, decode=True):
                if msg.get("error"):
                    raise DockerError(f"{doing}: {msg['error'].strip()}", hint=_registry_hint(msg["error"]))
                if on_line is not None and msg.get("status") and not msg.get("progressDetail"):
                    on_line(f"{msg['id']}: {msg['status']}" if msg.get("id") else msg["status"])
        return self.image_inspect(ref)


class _Containers(_Connection):
    """Containers: run, wait, logs, health, inspect, remove."""


    def run(
        self,
        image: str,
        command: Sequence[str] | str | None = None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount | tuple] = (),
        runtime: str | None = None,
        user: str | None = None,
        labels: Mapping[str, str] | None = None,
        entrypoint: Sequence[str] | str | None = None,
        working_dir: str | None = None,
        network_mode: str = "host",
        restart: str | None = None,
        healthcheck: dict | None = None,
        shm_size: str | None = None,
        uploads: Sequence[Upload] = (),
    ) -> str:
        """Start a detached container (host network by default); returns its id.
        `uploads` are copied in between create and start (owned by `user` when numeric)."""
        from docker.types import Mount as SdkMount

        sdk_mounts = []
        for m in mounts:
            if not isinstance(m, Mount):
                m = Mount(*m)
            sdk_mounts.append(SdkMount(target=m.target, source=os.path.abspath(m.source), type="bind",
                                       read_only=m.read_only))
        kwargs = dict(
            detach=True, name=name, environment=dict(env or {}), mounts=sdk_mounts,
            labels=dict(labels or {}), network_mode=network_mode,
        )
        for key, value in (("runtime", runtime), ("user", user), ("entrypoint", entrypoint),
                           ("working_dir", working_dir), ("healthcheck", healthcheck), ("shm_size", shm_size)):
            if value is not None:
                kwargs[key] = value
        if restart:
            kwargs["restart_policy"] = {"Name": restart}
        hint = None
        if runtime == "nvidia":
            hint = "the nvidia runtime must be registered with this engine (JetPack's nvidia-container-runtime)"
        try:
            with _errors(f"creating a container from {image}", self.host):
                kwargs.pop("detach")
                container = self.client.containers.create(image, command, **kwargs)
            try:
                if uploads:
                    self.copy_in(container.id, uploads, user)
                with _errors(f"starting a container from {image}", self.host):
                    container.start()
            except BaseException:
                # a container that failed to start is useless: leave nothing behind
                self.remove_container(container.id, force=True)
                raise
        except DockerError as e:
            if hint and "runtime" in e.message.lower():
                e.hint = hint
            raise
        return container.id

    def copy_in(self, container: str, uploads: Sequence[Upload], user: str | None = None) -> None:
        """Copy this host's files into a (created or running) container, in one archive."""
        from kit.archive import pack

        uid, gid = _numeric_user(user)
        with pack([(u.source, u.target) for u in uploads], uid, gid) as archive:
            with _errors(f"copying {', '.join(u.target for u in uploads)} into container {container[:12]}",
                         self.host):
                if not self.api.put_archive(container, "/", archive):
                    raise DockerError(f"the engine at {self.host} refused the files for container {container[:12]}")

    def copy_out(self, container: str, download: Download) -> list[str]:
        """Copy a container's directory into this host's directory; the relative paths of the files."""
        from kit.archive import unpack

        with _errors(f"copying {download.source} out of container {container[:12]}", self.host):
            stream, _ = self.api.get_archive(container, download.source, chunk_size=1 << 20)
            return unpack(stream, download.target, strip=1)

    def wait(self, container: str, timeout: float | None = None) -> int:
        """Block until the container exits; returns its exit code."""
        import requests

        try:
            with _errors(f"waiting for container {container}", self.host):
                result = self.api.wait(container, timeout=timeout)
        except DockerError as e:
            if isinstance(e.__cause__, (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)) \
                    and timeout is not None:
                raise DockerError(f"container {container} still running after {timeout:g}s") from e
            raise
        if result.get("Error"):
            raise DockerError(f"waiting for container {container}: {result['Error']}")
        return int(result.get("StatusCode", -1))

    def logs(self, container: str, tail: int | str = "all") -> str:
        with _errors(f"reading logs of {container}", self.host):
            raw = self.api.logs(container, stdout=True, stderr=True, tail=tail)
        return raw.decode("utf-8", "replace")

    def stream_logs(self, container: str) -> Iterator[bytes]:
        with _errors(f"following logs of {container}", self.host):
            yield from self.api.logs(container, stdout=True, stderr=True, stream=True, follow=True)

    def stop(self, container: str, timeout: int = 10) -> None:
        with _errors(f"stopping {container}", self.host):
            self.api.stop(container, timeout=timeout)

    def remove_container(self, container: str, force: bool = True, missing_ok: bool = True) -> None:
        import docker.errors as de

        try:
            with _errors(f"removing container {container}", self.host):
                self.api.remove_container(container, force=force, v=True)
        except DockerError as e:
            if missing_ok and isinstance(e.__cause__, de.NotFound):
                return
            raise

    def container_state(self, container: str) -> ContainerState:
        with _errors(f"inspecting container {container}", self.host):
            d = self.api.inspect_container(container)
        st = d.get("State") or {}
        health = (st.get("Health") or {}).get("Status")
        return ContainerState(
            id=d["Id"], name=d.get("Name", "").lstrip("/"), status=st.get("Status", ""),
            health=health, exit_code=st.get("ExitCode") if st.get("Status") in ("exited", "dead") else None,
            oom_killed=bool(st.get("OOMKilled")), labels=dict((d.get("Config") or {}).get("Labels") or {}),
            image=(d.get("Config") or {}).get("Image", ""),
        )

    def container_inspect(self, container: str) -> dict:
        """The raw inspect document, for details ContainerState does not carry."""
        with _errors(f"inspecting container {container}", self.host):
            return self.api.inspect_container(container)

    def wait_healthy(self, container: str, timeout: float, interval: float = 0.5) -> ContainerState:
        """Poll until healthy; DockerError if it turns unhealthy, exits, or times out."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.container_state(container)
            if st.health == "healthy" or (st.health is None and st.status == "running"):
                return st
            if st.status in ("exited", "dead") or st.health == "unhealthy":
                tail = self.logs(container, tail=20).splitlines()
                raise DockerError(f"container {st.name or container} is {st.health or st.status}"
                                  + (f" (exit {st.exit_code})" if st.exit_code is not None else "")
                                  + (", killed for lack of memory" if st.oom_killed else ""), details=tail)
            if time.monotonic() >= deadline:
                tail = self.logs(container, tail=20).splitlines()
                raise DockerError(f"container {st.name or container} not healthy after {timeout:g}s "
                                  f"(status {st.status}, health {st.health})", details=tail)
            time.sleep(interval)

    def containers(self, labels: Mapping[str, str] | None = None, all: bool = True) -> list[ContainerState]:
        filters = {"label": [f"{k}={v}" for k, v in (labels or {}).items()]} if labels else None
        with _errors("listing containers", self.host):
            found = self.api.containers(all=all, filters=filters)
        return [self.container_state(c["Id"]) for c in found]

    # -- swarm (on a manager) ----------------------------------------------------

    def nodes(self) -> list[dict]:
        """The swarm's nodes, raw (ID, Spec.Labels, Status.State, Description...)."""
        with _errors("listing swarm nodes", self.host):
            return self.api.nodes()

    def set_node_labels(self, node_id: str, labels: Mapping[str, str]) -> None:
        """Set these labels on a node, keeping its others (one spec update)."""
        with _errors(f"labelling swarm node {node_id}", self.host):
            node = self.api.inspect_node(node_id)
            spec = dict(node.get("Spec") or {})
            current = dict(spec.get("Labels") or {})
            if all(current.get(k) == v for k, v in labels.items()):
                return
            current.update(labels)
            spec["Labels"] = current
            self.api.update_node(node_id, node["Version"]["Index"], spec)

    def service_inspect(self, name: str) -> dict | None:
        """A service's raw inspect document, None when there is no such service."""
        import docker.errors as de

        try:
            with _errors(f"inspecting service {name}", self.host):
                return self.api.inspect_service(name)
        except DockerError as e:
            if isinstance(e.__cause__, de.NotFound):
                return None
            raise

    def tasks(self, service: str) -> list[dict]:
        """Every task of a service (all desired states), raw."""
        with _errors(f"listing tasks of {service}", self.host):
            return self.api.tasks(filters={"service": service})

    def remove_service(self, name: str) -> None:
        import docker.errors as de

        try:
            with _errors(f"removing service {name}", self.host):
                self.api.remove_service(name)
        except DockerError as e:
            if not isinstance(e.__cause__, de.NotFound):
                raise

    def run_to_completion(
        self,
        image: str,
        command: Sequence[str] | str | None = None,
        on_line: LineCallback | None = None,
        timeout: float | None = None,
        keep: bool = False,
        downloads: Sequence[Download] = (),
        **run_kwargs,
    ) -> RunResult:
        """Run a container to its end, streaming its output line by line to
        `on_line`; returns exit code and full logs. `downloads` are copied out
        once it exited, whatever its exit code. The container is removed
        afterwards unless keep=True. On timeout it is killed (DockerError)."""
        cid = self.run(image, command, **run_kwargs)
        splitter = LineSplitter(on_line)
        stream_error: list[BaseException] = []

        def follow():
            try:
                for chunk in self.stream_logs(cid):
                    splitter.feed(chunk.decode("utf-8", "replace"))
            except BaseException as e:  # reported below, after the exit code
                stream_error.append(e)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        try:
            try:
                code = self.wait(cid, timeout=timeout)
            except DockerError:
                with contextlib.suppress(DockerError):
                    self.api.kill(cid)
                reader.join(5)
                splitter.close()
                raise DockerError(f"container from {image} did not finish within {timeout:g}s; killed it",
                                  details=[ln for ln in splitter.lines if ln.strip()][-15:])
            reader.join(30)
            splitter.close()
            for download in downloads:
                self.copy_out(cid, download)
            state = self.container_state(cid)
            logs = "\n".join(splitter.lines)
            if stream_error and not logs:
                logs = self.logs(cid)
            return RunResult(exit_code=code, logs=logs, oom_killed=state.oom_killed)
        finally:
            if not keep:
                self.remove_container(cid, force=True)


def _numeric_user(user: str | None) -> tuple[int, int]:
    """(uid, gid) for copied files from a container user "uid[:gid]"; root for a name or none."""
    uid, _, gid = (user or "").partition(":")
    if not uid.isdigit():
        return 0, 0
    return int(uid), int(gid) if gid.isdigit() else int(uid)


class Engine(_Images, _Containers):
    """A connected Docker engine (from `connect`): the one entry to Docker for the rest of kit.
    Methods return plain results or raise DockerError."""


def failed_base_image(lines: Sequence[str], buildargs: Mapping[str, str]) -> str | None:
    """The image of a FROM step when it is the last step the build log reached."""
    steps = [ln for ln in lines if ln.startswith("Step ")]
    if not steps:
        return None
    instr = steps[-1].split(" : ", 1)[-1].strip()
    if not instr.upper().startswith("FROM "):
        return None
    image = instr.split()[1]
    for k, v in buildargs.items():
        image = image.replace("${" + k + "}", v).replace("$" + k, v)
    return image


def _build_hint(error: str) -> str | None:
    text = error.lower()
    if "pull access denied" in text or "manifest unknown" in text or "not found" in text:
        return "the base image is missing and this machine may not pull it: run `kit base` (CPU) or load the L4T base"
    if "no space left" in text:
        return "free disk space: docker system prune, or move docker's data-root"
    return None


def _registry_hint(error: str) -> str | None:
    text = error.lower()
    if "unauthorized" in text or "denied" in text or "authentication required" in text:
        return "log in first: docker login REGISTRY (kit reads credentials from the docker config)"
    if "connection refused" in text or "no such host" in text or "dial tcp" in text:
        return "the registry is not reachable from the Docker engine; check its address and that it runs"
    if "http response to https client" in text or "server gave http response" in text:
        return "this registry speaks plain HTTP: add it to insecure-registries in the engine's daemon.json"
    return None


# ---- docker CLI (compose only) ------------------------------------------------------------


_compose_cache: list[list[str]] = []


COMPOSE_FLAVOURS = {"v2": ["docker", "compose"], "v1": ["docker-compose"]}


def compose_command() -> list[str]:
    """`["docker", "compose"]` when that plugin works, else `["docker-compose"]`.
    KIT_COMPOSE=v1|v2 picks one (and fails if it does not work)."""
    wanted = os.environ.get("KIT_COMPOSE", "").strip().lower()
    if wanted:
        if wanted not in COMPOSE_FLAVOURS:
            raise DockerError(f"KIT_COMPOSE={wanted!r} is not one of v1, v2")
        argv = COMPOSE_FLAVOURS[wanted]
        if _compose_works(argv):
            return list(argv)
        raise DockerError(f"KIT_COMPOSE={wanted}: `{' '.join(argv)} version` does not work",
                          hint="v2: the docker CLI plugin (scripts/setup-host installs Debian trixie's); "
                          "v1: apt-get install docker-compose")
    if _compose_cache:
        return list(_compose_cache[0])
    candidates = []
    if shutil.which("docker"):
        candidates.append(COMPOSE_FLAVOURS["v2"])
    if shutil.which("docker-compose"):
        candidates.append(COMPOSE_FLAVOURS["v1"])
    for argv in candidates:
        if _compose_works(argv):
            _compose_cache.append(argv)
            return list(argv)
    raise DockerError(
        "docker compose is not available (neither `docker compose` nor `docker-compose` works)",
        hint="install the compose plugin (apt-get install docker-compose-plugin) or Debian's "
        "docker-compose (apt-get install docker-compose)",
    )


_works_cache: dict[tuple, bool] = {}


def _compose_works(argv: list[str]) -> bool:
    key = tuple(argv)
    if key not in _works_cache:
        try:
            probe = subprocess.run(argv + ["version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, timeout=30)
            _works_cache[key] = probe.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False
    return _works_cache[key]
