"""URIs: one string type for every place data lives (path, file://, s3://, ...).

fsspec opens them for Zarr and Parquet; GDAL (through rasterio) opens tiles,
and understands ``s3://``, ``gs://``, ``https://`` itself via its /vsi handlers.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from ..errors import InvalidParameterError, StorageError, is_transient

GDAL_SCHEMES = {"s3", "gs", "gcs", "az", "abfs", "http", "https", "file"}


def protocol(uri: str) -> str:
    return uri.split("://", 1)[0] if "://" in uri else "file"


def is_local(uri: str) -> bool:
    return protocol(uri) == "file"


def local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return str(Path(local_path(base)).joinpath(*parts))
    return posixpath.join(base.rstrip("/"), *parts)


def parent(uri: str) -> str:
    if is_local(uri):
        return str(Path(local_path(uri)).resolve().parent)
    return uri.rstrip("/").rsplit("/", 1)[0]


def resolve_location(location: str, base_dir: str) -> str:
    """A tile location from an index: relative ones are relative to the index."""
    if "://" in location or location.startswith("/vsi") or Path(location).is_absolute():
        return location
    return join(base_dir, location)


def filesystem(uri: str, storage_options: dict[str, Any] | None = None):
    """(fsspec filesystem, path) for ``uri``."""
    return url_to_fs(uri, **(storage_options or {}))


def with_requester_pays(uri: str, storage_options: dict[str, Any], requester_pays: bool) -> dict[str, Any]:
    """``storage_options`` for reading ``uri`` from a requester-pays bucket when asked (s3fs' own option)."""
    if requester_pays and protocol(uri) == "s3":
        return storage_options | {"requester_pays": True}
    return storage_options


# Schemes whose first path element is a bucket (container) that we never create.
BUCKET_SCHEMES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


def check_output_root(uri: str, storage_options: dict[str, Any] | None = None,
                      param: str = "output_uri") -> None:
    """Fail before anything is written when ``uri``'s bucket is missing or refused.

    Without this, a typo in the bucket name surfaces as a failed write deep in
    the first task, after planning; here it is one clear error naming the URI.
    """
    if protocol(uri) not in BUCKET_SCHEMES:
        return
    fs, path = filesystem(uri, storage_options)
    bucket = path.split("/", 1)[0]
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise InvalidParameterError(param, uri, f"bucket {bucket!r} does not exist",
                                    "a URI in an existing bucket (buckets are not created by "
                                    "rasterflow)") from None
    except Exception as exc:
        raise storage_error(uri, exc) from None


def storage_error(uri: str, exc: BaseException) -> StorageError:
    """``exc`` (raised by fsspec, botocore, ...) on ``uri`` as a ``StorageError`` naming it."""
    if isinstance(exc, FileNotFoundError):
        problem = "no such file or object"
    elif isinstance(exc, PermissionError):
        problem = f"access denied ({exc}); check the credentials in storage_options or the environment"
    else:
        problem = f"{type(exc).__name__}: {exc}"
    return StorageError(uri, problem, transient=is_transient(exc))


def exists(uri: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return fs.exists(path)


def file_fingerprint(uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """What identifies a file's content cheaply: size plus ETag or mtime."""
    fs, path = filesystem(uri, storage_options)
    info = fs.info(path)
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size')}:{stamp}"


def rasterio_path(uri: str) -> str:
    """The path GDAL should open; ``memory://`` and friends are not GDAL's."""
    if is_local(uri):
        return local_path(uri)
    return uri


def remove(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    fs, path = filesystem(uri, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_bytes_atomic(uri: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write a whole object; local files via rename so readers never see half a file."""
    fs, path = filesystem(uri, storage_options)
    fs.makedirs(posixpath.dirname(path) if not is_local(uri) else str(Path(path).parent), exist_ok=True)
    if is_local(uri):
        tmp = f"{path}.tmp"
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as fh:  # object stores replace whole objects
            fh.write(data)


def open_input(uri: str, storage_options: dict[str, Any] | None = None):
    return fsspec.open(uri, "rb", **(storage_options or {}))


# Every engine step that touches storage takes the fsspec options of each URI it opens
# from a function (the config's ``storage_options_for``): one source of credentials.
OptionsFor = Callable[[str], dict[str, Any]]


def no_options(uri: str) -> dict[str, Any]:
    """Default ``OptionsFor``: fsspec's defaults for every URI (local files, public buckets)."""
    return {}
