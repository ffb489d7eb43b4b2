"""Image references: repository, tag and digest, as Docker spells them."""

from __future__ import annotations

import re

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def split_ref(ref: str) -> tuple[str, str | None, str | None]:
    """"reg:5000/a/b:tag" -> (repository, tag, None); "repo@sha256:.." -> (repository, None, digest)."""
    if "@" in ref:
        repo, _, digest = ref.partition("@")
        return repo, None, digest
    repo, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:  # a colon after the last slash is a tag, not a registry port
        return repo, tag, None
    return ref, None, None


def registry_of(repository: str) -> str:
    """The registry address part of a repository (docker's rule: a dot, a colon or localhost)."""
    first, sep, _ = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"
