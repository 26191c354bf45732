"""Errors raised for bad user input: each names the offending file and the problem."""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A file that cannot be used: corrupt, missing a stream, wrong rate, no face, too short...

    `path` is the offending file, `reason` a short human sentence. Long jobs catch this,
    record (path, reason) in their report and move on.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
