"""Registry side of kit: push by digest, resolve references to digests.

A tag moves; a digest names exactly one image. `kit push` records the digest
the registry returned, and `kit rollout` resolves its image to a digest once,
so every device runs `repository@sha256:...`. Credentials come from the docker
config (the SDK reads it, credential helpers included); kit never prints or
stores them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from kit import labels as lb
from kit.atomic import write_json_atomic
from kit.errors import DockerError, UsageError
from kit.imageref import DIGEST_RE, registry_of, split_ref
from kit.units import utc_timestamp

_UNREACHABLE = ("connection refused", "no such host", "dial tcp", "i/o timeout", "no route to host",
                "connection reset", "server misbehaving", "eof")


def _registry_error(e: DockerError, repository: str, doing: str) -> DockerError:
    """Name the registry's address when it could not be reached."""
    text = (e.message or "").lower()
    if any(s in text for s in _UNREACHABLE):
        return DockerError(f"registry {registry_of(repository)} is unreachable ({doing}): {e.message}",
                           hint=f"start the registry or fix the address in {repository}; the Docker engine "
                                f"must reach it", details=e.details)
    return e


# ---- push ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    name: str
    source: str  # the local image that was pushed
    ref: str  # repository:tag
    repository: str
    tag: str
    digest: str  # sha256:...
    digest_ref: str  # repository@sha256:...
    record: str  # path of push.json
    pushed_at: str = field(default_factory=utc_timestamp)

    def to_dict(self) -> dict:
        return asdict(self)


def push(target: str, state_root: Path | None = None, on_line=None, engine=None) -> PushResult:
    """Push a model manifest's image (ModelManifest.image_ref) or an image ref.

    Records the digest in <manifest dir or state_root or cwd>/.kit/<name>/push.json."""
    from kit.docker_api import connect

    path = Path(target)
    if path.is_file() or target.endswith((".yaml", ".yml", ".json")):
        from kit.manifest.load import load_model

        manifest = load_model(path, check_files=False)
        source = ref = manifest.image_ref
        name = manifest.name
        root = manifest.file.parent
    else:
        repo, tag, digest = split_ref(target)
        if digest or not tag:
            raise UsageError(f"push needs a tagged image (repository:tag), got {target!r}",
                             hint="give the image as REPOSITORY:TAG, or the model manifest (kit.yaml)")
        source = ref = target
        name = None
        root = Path.cwd()
    repository, tag, _ = split_ref(ref)
    own = engine is None
    engine = engine or connect()
    try:
        if not engine.image_exists(source):
            raise DockerError(f"image {source} is not on this Docker engine ({engine.host})",
                              hint="build it first: kit build MANIFEST")
        if name is None:
            labels = engine.image_inspect(source).labels
            name = labels.get(lb.OCI_TITLE) or repository.rsplit("/", 1)[-1]
        try:
            digest = engine.push(ref, on_line=on_line)
        except DockerError as e:
            raise _registry_error(e, repository, f"pushing {ref}") from e
    finally:
        if own:
            engine.close()
    if not DIGEST_RE.match(digest):
        raise DockerError(f"pushing {ref}: the registry returned an unexpected digest {digest!r}")
    record = Path(state_root or root) / ".kit" / name / "push.json"
    result = PushResult(name=name, source=source, ref=ref, repository=repository, tag=tag, digest=digest,
                        digest_ref=f"{repository}@{digest}", record=str(record))
    write_json_atomic(record, result.to_dict())
    return result


# ---- resolve ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedImage:
    """An image pinned to its registry digest, with what rollouts need from its config."""

    ref: str  # as asked for
    repository: str
    digest: str
    labels: dict
    architecture: str
    health_test: tuple  # the image's HEALTHCHECK test ("CMD", ...); () when it has none
    env: dict  # the image's ENV
    health_start_period: float = 0.0  # the HEALTHCHECK's start period, seconds (0: none given)

    @property
    def digest_ref(self) -> str:
        return f"{self.repository}@{self.digest}"


def distribution_digest(engine, ref: str) -> str:
    """The registry's manifest digest for `ref`, asked through the engine (which
    holds the registry's TLS/insecure settings; credentials from the docker config)."""
    repository, _, _ = split_ref(ref)
    try:
        digest = engine.distribution_digest(ref)
    except DockerError as e:
        raise _registry_error(e, repository, f"resolving {ref}") from e
    if not DIGEST_RE.match(digest):
        raise DockerError(f"the registry gave no digest for {ref}")
    return digest


def image_config(engine, ref: str) -> dict:
    """The image's config section (Env, Labels, Healthcheck) and architecture."""
    info = engine.image_inspect(ref)
    cfg = dict(info.config)
    cfg["Architecture"] = info.architecture
    return cfg


def resolve(ref: str, engine=None, on_line=None) -> ResolvedImage:
    """Resolve `ref` to its registry digest once, and read the image's config:
    from the local engine when it already holds that digest (kit build + kit
    push here), else by pulling `repository@digest` to it."""
    from kit.docker_api import connect

    repository, tag, pinned = split_ref(ref)
    if not tag and not pinned:
        raise UsageError(f"image {ref!r} has neither a tag nor a digest",
                         hint="use repository:tag or repository@sha256:...")
    own = engine is None
    engine = engine or connect()
    try:
        digest = distribution_digest(engine, ref)
        if pinned and digest != pinned:
            raise DockerError(f"the registry serves {repository} digest {digest}, not the pinned {pinned}")
        digest_ref = f"{repository}@{digest}"
        if not engine.image_exists(digest_ref):
            try:
                engine.pull(digest_ref, on_line=on_line)
            except DockerError as e:
                raise _registry_error(e, repository, f"pulling {digest_ref}") from e
        cfg = image_config(engine, digest_ref)
    finally:
        if own:
            engine.close()
    healthcheck = cfg.get("Healthcheck") or {}
    health = tuple(healthcheck.get("Test") or ())
    env = {}
    for item in cfg.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    return ResolvedImage(ref=ref, repository=repository, digest=digest, labels=dict(cfg.get("Labels") or {}),
                         architecture=cfg.get("Architecture", ""), health_test=health, env=env,
                         health_start_period=int(healthcheck.get("StartPeriod") or 0) / 1e9)
