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


# Parameters whose values are credentials: messages show their keys, never their values.
SECRET_PARAMETERS = frozenset({"envs", "storage_options"})
MASK = "***"


def masked(value: Any) -> Any:
    """``value`` with every leaf of a mapping replaced by ``MASK`` (keys kept: they say what was given)."""
    if isinstance(value, dict):
        return {k: masked(v) if isinstance(v, dict) else MASK for k, v in value.items()}
    return MASK if value is not None else None


def is_secret(param: str) -> bool:
    """Whether ``param`` (``envs``, ``storage_options.s3.key``, ``envs['X']``) holds credentials."""
    return param.split(".", 1)[0].split("[", 1)[0] in SECRET_PARAMETERS


def _show(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidParameterError(RasterflowError, ValueError):
    """A parameter of a client call or flow is wrong; ``param`` names it.

    Values of secret parameters (``envs``, ``storage_options``) are masked here,
    once, so no message, log line or failed run's state can carry them.
    """

    def __init__(self, param: str, value: Any, problem: str, valid: str | None = None):
        self.param = param
        if is_secret(param):
            value = masked(value)
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


class StorageError(RasterflowError):
    """Reading or writing ``uri`` on a storage system failed; ``transient`` says if a retry may help."""

    def __init__(self, uri: str, problem: str, *, transient: bool = False):
        self.uri = uri
        self.transient = transient
        super().__init__(f"{uri}: {problem}")


# HTTP statuses object stores answer when a retry may succeed (throttling, overload, timeouts).
TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether retrying what raised ``exc`` may succeed.

    A missing object or bucket, a refused permission and missing credentials
    are permanent: retrying them only delays the error a user has to fix.
    Other I/O failures (s3fs turns exhausted 5xx retries into plain
    ``OSError``s; connections drop, time out) are transient, as is anything we
    cannot classify, so an unknown failure costs a few retries rather than a
    lost run.
    """
    if isinstance(exc, RasterflowError):
        return exc.transient
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if _missing_credentials(exc):
        return False
    response = getattr(exc, "response", None)  # botocore ClientError that no layer translated
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status in TRANSIENT_HTTP_STATUS
    return True


def _missing_credentials(exc: BaseException | None) -> bool:
    """botocore found no (or half the) credentials, itself or as a cause: no retry will find them."""
    try:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError
    except ImportError:  # no S3 support installed, so no S3 error either
        return False
    while exc is not None:
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
