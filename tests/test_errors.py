"""Which failures are worth a retry: the rule every I/O task's retry condition applies."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

from rasterflow.engine.uris import storage_error
from rasterflow.errors import InputReadError, InvalidParameterError, is_transient


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize("exc, transient", [
    (OSError("SlowDown: Please reduce your request rate"), True),  # s3fs after its own retries
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (client_error(503, "SlowDown"), True),
    (client_error(500, "InternalError"), True),
    (client_error(403, "AccessDenied"), False),
    (client_error(404, "NoSuchBucket"), False),
    (FileNotFoundError("bucket/key"), False),
    (PermissionError("Access Denied"), False),
    (InvalidParameterError("bands", ["x"], "not in the tiles"), False),
    (InputReadError("s3://b/t.tif", "cannot read tile", transient=True), True),
    (NoCredentialsError(), False),  # "Unable to locate credentials": retrying finds none either
    (PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), False),
    (wrapped(OSError("could not write"), NoCredentialsError()), False),
])
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def test_storage_error_names_the_uri_and_keeps_the_classification():
    denied = storage_error("s3://b/out.zarr", PermissionError("Access Denied"))
    assert str(denied).startswith("s3://b/out.zarr: access denied") and not denied.transient
    throttled = storage_error("s3://b/out.zarr", OSError("SlowDown"))
    assert throttled.transient and "s3://b/out.zarr" in str(throttled)


def test_secret_parameters_are_masked_in_every_message():
    error = InvalidParameterError("envs", {"AWS_SECRET_ACCESS_KEY": "hunter2"}, "bad")
    assert "hunter2" not in str(error) and "hunter2" not in repr(error.value)
    assert "AWS_SECRET_ACCESS_KEY" in str(error)
    nested = InvalidParameterError("storage_options.s3", {"key": "k", "secret": "hunter2"}, "bad")
    assert "hunter2" not in str(nested)
    assert "hunter2" in str(InvalidParameterError("query", "hunter2", "bad"))  # not a secret parameter
