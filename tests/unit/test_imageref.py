"""kit.imageref: image references split the way Docker reads them."""

from __future__ import annotations

import pytest

from kit.imageref import DIGEST_RE, registry_of, split_ref

D = "sha256:" + "f" * 64


@pytest.mark.parametrize("ref,expected", [
    ("127.0.0.1:5000/a/b:1.0", ("127.0.0.1:5000/a/b", "1.0", None)),
    ("127.0.0.1:5000/a/b", ("127.0.0.1:5000/a/b", None, None)),
    (f"reg.example.com/v/r@{D}", ("reg.example.com/v/r", None, D)),
    ("busybox:latest", ("busybox", "latest", None)),
])
def test_split_ref(ref, expected):
    assert split_ref(ref) == expected


@pytest.mark.parametrize("repo,registry", [
    ("127.0.0.1:5000/a/b", "127.0.0.1:5000"), ("registry.example.com/vision/r", "registry.example.com"),
    ("localhost/x", "localhost"), ("library/busybox", "docker.io"), ("busybox", "docker.io"),
])
def test_registry_of(repo, registry):
    assert registry_of(repo) == registry


def test_digest_pattern():
    assert DIGEST_RE.match(D) and not DIGEST_RE.match("sha256:abc") and not DIGEST_RE.match(D.upper())
