"""kit.build.base: a downloaded wheel directory replaces the old one whole; a build context goes away whatever
happens. (build_verified runs against the real engine in tests/integration/test_base.py.)"""

import pytest

from kit.build import base as bases
from kit.build.base import publish_wheels


def test_publish_wheels_replaces_the_old_directory_and_says_what_it_holds(tmp_path):
    tmp, dest = tmp_path / "tmp", tmp_path / "wheels"
    tmp.mkdir(), dest.mkdir()
    (dest / "old-1.0-py3-none-any.whl").write_bytes(b"old")
    (tmp / "new-2.0-py3-none-any.whl").write_bytes(b"x" * 2_000_000)
    said = []
    assert publish_wheels(tmp, dest, said.append) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["new-2.0-py3-none-any.whl"] and not tmp.exists()
    assert said == [f"wheels: 1 wheels, 2 MB in {dest}"]


def test_the_build_context_is_removed_even_when_the_build_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path))
    with pytest.raises(RuntimeError):
        with bases.build_context("kit-test-") as context:
            (context / "Dockerfile").write_text("FROM scratch\n")
            assert context.parent == tmp_path
            raise RuntimeError("the build failed")
    assert list(tmp_path.iterdir()) == []
