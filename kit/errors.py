"""One error tree for kit. Each kind carries a stable exit code; the CLI
renders any KitError once, to stderr, without a traceback (unless --debug)."""

from __future__ import annotations

# Exit codes are part of the public interface (documented in the README).
EXIT_OK = 0
EXIT_FAILURE = 1  # something failed while running
EXIT_INVALID = 2  # invalid input or usage: manifest, flags, files
EXIT_PREFLIGHT = 3  # the host or device cannot run this (TensorRT absent, L4T mismatch, memory)
EXIT_DOCKER = 4  # the Docker engine refused or failed
EXIT_GATE = 5  # the optimization could not be proven (no engines, fallback, parity)
EXIT_ROLLOUT = 6  # a rollout failed (devices rolled back or halted)
EXIT_INTERRUPTED = 130


class KitError(Exception):
    """Base of every error kit reports to a user.

    message: what went wrong, in plain words.
    hint: what to do about it (optional).
    details: extra lines (e.g. every problem found in a manifest).
    """

    exit_code = EXIT_FAILURE
    title = "error"

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details or [])

    def __str__(self) -> str:
        return self.message


class UsageError(KitError):
    exit_code = EXIT_INVALID
    title = "usage error"


class ManifestError(KitError):
    """A manifest (or any input file) is invalid. `problems` holds every one found."""

    exit_code = EXIT_INVALID
    title = "invalid manifest"

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None, problems=None):
        super().__init__(message, hint, details)
        self.problems = list(problems or [])


class PreflightError(KitError):
    exit_code = EXIT_PREFLIGHT
    title = "preflight failed"


class DockerError(KitError):
    exit_code = EXIT_DOCKER
    title = "docker error"


class OptimizeError(KitError):
    exit_code = EXIT_GATE
    title = "optimization failed"


class RolloutError(KitError):
    exit_code = EXIT_ROLLOUT
    title = "rollout failed"
