"""testkit.harness: `with` starts the harness, closes it after, and closes it when the start fails half-way."""

import pytest

from testkit.harness import Harness


class Recorder(Harness):
    def __init__(self, fail=False):
        self.events, self.fail = [], fail

    def start(self):
        self.events.append("start")
        if self.fail:
            raise RuntimeError("the second daemon did not come up")

    def close(self):
        self.events.append("close")


def test_with_starts_then_closes():
    with Recorder() as h:
        assert h.events == ["start"]
    assert h.events == ["start", "close"]


def test_a_failed_start_closes_what_started_and_raises():
    h = Recorder(fail=True)
    with pytest.raises(RuntimeError, match="did not come up"):
        with h:
            pytest.fail("the body must not run")
    assert h.events == ["start", "close"]
