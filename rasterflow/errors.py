"""Errors a user can cause or meet.

Every one is a ``RasterflowError`` so callers can catch the family; each message
names what was wrong, the value, and what would be valid, because the person
reading it is usually looking at a failed scheduled run, not at our code.
"""

from __future__ import annotations

from typing import Any


class RasterflowError(Exception):
    """Base of every error rasterflow raises on purpose.

    ``transient`` marks errors worth retrying (flaky storage); everything else is
    permanent and fails a task at once instead of burning its retries.
    """

    transient: bool = False


def _show(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidParameterError(RasterflowError, ValueError):
    """A parameter of a client call or flow is wrong; ``param`` names it."""

    def __init__(self, param: str, value: Any, problem: str, valid: str | None = None):
        self.param = param
        self.value = value
        self.problem = problem
        self.valid = valid
        message = f"{param}={_show(value)}: {problem}"
        if valid:
            message += f" (valid: {valid})"
        super().__init__(message)


class ConfigError(RasterflowError):
    """The rasterflow configuration file (or its values) is invalid."""


class InputReadError(RasterflowError):
    """An input (tile, index, AOI) could not be read; ``uri`` names it."""

    def __init__(self, uri: str, problem: str, *, transient: bool = False):
        self.uri = uri
        self.transient = transient
        super().__init__(f"{uri}: {problem}")


class StoreError(RasterflowError):
    """A Zarr store is missing, incomplete, or not a rasterflow store."""
