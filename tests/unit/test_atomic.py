"""kit.atomic: the one atomic-write helper every host module uses."""

from __future__ import annotations

import json

import pytest

from kit import atomic


def test_atomic_write_leaves_old_content_when_the_write_fails(tmp_path):
    path = tmp_path / "rollout.json"
    atomic.write_json_atomic(path, {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic.write_json_atomic(path, {"a": Boom()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["rollout.json"]  # no temp file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"
