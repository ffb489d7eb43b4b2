"""The `with` protocol the test harnesses share (fleet_harness.Fleet, swarm_harness.Swarm): a start
that fails half-way closes what did start, so a failed fixture leaves no daemon behind."""

from __future__ import annotations


class Harness:
    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
