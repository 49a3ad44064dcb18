"""Exceptions that carry what a user needs to fix a problem."""

from __future__ import annotations

from pathlib import Path


class FeatregError(Exception):
    """Base class of every error featreg raises on purpose."""


class InputError(FeatregError):
    """Bad input data: names the patient, the file and the problem."""

    def __init__(self, problem: str, *, path: str | Path | None = None, patient: str | None = None):
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.patient = patient
        parts = []
        if patient is not None:
            parts.append(f"patient {patient}")
        if path is not None:
            parts.append(f"file {path}")
        prefix = ": ".join([", ".join(parts)]) if parts else ""
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class ConfigError(FeatregError):
    """Bad experiment configuration."""


def first_line(exc: Exception) -> str:
    """The first non-empty line of an exception's message (itk's are many lines long)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)

