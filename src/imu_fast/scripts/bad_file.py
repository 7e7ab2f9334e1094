"""The one error type of the script commands: a file (or folder) that cannot be used, and why."""

from __future__ import annotations

from pathlib import Path


class BadFile(ValueError):
    def __init__(self, path, problem: str):
        self.path = Path(path)
        super().__init__(f"{path}: {' '.join(problem.split())}")  # one line, whatever the cause's layout
