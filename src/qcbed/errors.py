"""The one exception type qcbed raises for bad input, and its relatives."""

from __future__ import annotations

from os import PathLike
from typing import Any


class QcbedError(Exception):
    """Base class of every error qcbed raises on purpose."""


class InputError(QcbedError, ValueError):
    """Bad input: a file, a keyword, a value or an array that is not what was expected.

    The message names the source (file path or argument), the location (line
    number, CIF tag or project-file key) and what was expected versus found.

    Parameters
    ----------
    message : str
        What is wrong, in words.
    source : str or path, optional
        File path, or the name of the argument/object the input came from.
    line : int, optional
        1-based line number in ``source``.
    tag : str, optional
        CIF tag, keyword, HDF5 dataset or TOML key.
    expected, found : optional
        What was expected and what was found instead.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | PathLike[str] | None = None,
        line: int | None = None,
        tag: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        self.reason = message
        self.source = None if source is None else str(source)
        self.line = line
        self.tag = tag
        self.expected = expected
        self.found = found
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.source is not None:
            where = self.source
            if self.line is not None:
                where += f":{self.line}"
        if self.tag is not None:
            where += f" [{self.tag}]" if where else f"[{self.tag}]"
        text = f"{where}: {self.reason}" if where else self.reason
        details = []
        if self.expected is not None:
            details.append(f"expected {self.expected}")
        if self.found is not None:
            details.append(f"found {self.found!r}")
        if details:
            text += " (" + ", ".join(details) + ")"
        return text


class ConvergenceError(QcbedError, RuntimeError):
    """A numerical procedure (eigen-solver, refinement) did not converge."""


class WorkerError(QcbedError, RuntimeError):
    """A parallel worker failed; the message carries the worker's traceback."""
