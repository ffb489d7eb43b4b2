"""The rollout's smoke check (kit/fleet/smoke.py) against a real server process."""

from pathlib import Path

import pytest

import models
from kit.errors import RolloutError
from kit.fleet.smoke import smoke
from testkit.server import HALF_PLUS_TWO, ServerProcess as Server

pytestmark = pytest.mark.tf


def test_smoke_predicts_on_a_numeric_model():
    server = Server(HALF_PLUS_TWO, "half_plus_two", "1").wait_ready()
    try:
        body = smoke("127.0.0.1", server.port, "half_plus_two", timeout=30)
        assert "skipped" not in body and body["outputs"]
        with pytest.raises(RolloutError, match="404"):
            smoke("127.0.0.1", server.port, "no_such_model", timeout=30)
    finally:
        assert server.stop() == 0


def test_smoke_sends_no_invented_bytes_to_a_jpeg_model(tmp_path):
    # An empty string is no JPEG: a prediction with it would fail the rollout of every image model.
    server = Server(Path(models.make_jpeg_mean(tmp_path / "jpeg" / "1")), "jpeg", "1").wait_ready()
    try:
        body = smoke("127.0.0.1", server.port, "jpeg", timeout=30)
        assert "image_bytes" in body["skipped"]
        assert server.predict({"instances": [""]})[0] == 400  # what the zeros request would have got
    finally:
        assert server.stop() == 0
