"""Engine exceptions: each names the file, key or shape at fault and what the user can do about it.

Pages catch `MergelabError` and show its message; the CLI prints it and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path


class MergelabError(Exception):
    """Base class: `subject` (a path or key) + what is wrong + how to fix it."""

    def __init__(self, subject: str | Path, problem: str, *, fix: str) -> None:
        self.subject = str(subject)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.subject}: {problem}. Fix: {fix}")


class CheckpointError(MergelabError):
    """A checkpoint file is missing, unreadable, truncated, non-finite or of the wrong architecture."""


class SchemaError(MergelabError):
    """A JSON sidecar, recipe or manifest does not follow its documented schema."""


class PathNotAllowedError(MergelabError):
    """A user-typed path resolves outside the data home, assets/ and the configured roots."""


class SpecialFileError(MergelabError):
    """A path where mergelab reads a file names a named pipe, socket or device: it is refused unopened (reading a
    pipe would block until something writes to it), never skipped."""


class DatasetError(MergelabError):
    """A task dataset folder or file is missing or malformed."""


class ShapeError(MergelabError):
    """Flat tensors or state dicts whose shapes do not match the ParamSpec."""


class ParameterError(MergelabError):
    """A merge parameter is out of its declared range or has the wrong arity."""


class UnknownMethodError(ParameterError):
    """A merge method name (or one of its parameters) is not registered."""


class OutputExistsError(MergelabError):
    """An output folder already exists; mergelab writes a new one rather than mixing old and new files."""


class DiskFullError(MergelabError):
    """A file could not be written for want of room: the disk or quota is full, or a file-size limit hit."""
