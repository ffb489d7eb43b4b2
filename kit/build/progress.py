"""What the pipeline tells its caller while it runs: one StepResult per step, log lines.

The pipeline only calls a Reporter; the CLI passes one that draws (kit/cli/views/build.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepResult:
    name: str
    status: str  # ran | reused | skipped | failed
    seconds: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}


class Reporter:
    """Progress sink. The default stays silent."""

    def start(self, step: str, what: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass

    def end(self, result: StepResult) -> None:
        pass
