"""Errors raised on bad input: every message names the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data file is missing, malformed or inconsistent with the rest of the pair.

    The message always says which file, which line (when there is one) and how to fix it.
    """

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, fix: str = ""):
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}, line {line}" if line is not None else self.path
        message = f"{where}: {problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)
