"""URIs: one string type for every place data lives (path, file://, s3://, ...).

fsspec opens them for Zarr and Parquet; GDAL (through rasterio) opens tiles,
and understands ``s3://``, ``gs://``, ``https://`` itself via its /vsi handlers.
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def check_scheme(uri: str, param: str) -> None:
    """An error naming ``param`` unless fsspec knows ``uri``'s scheme and its package is installed."""
    scheme = protocol(uri)
    try:
        fsspec.get_filesystem_class(scheme)
    except ValueError:
        raise InvalidParameterError(param, uri, f"unknown URI scheme {scheme!r}",
                                    "a local path, file://, s3://, gs://, az://, memory:// or another "
                                    "fsspec protocol") from None
    except ImportError as exc:
        raise InvalidParameterError(param, uri, f"the {scheme}:// filesystem is not installed ({exc})",
                                    f"install the package fsspec names for {scheme}://") from None


def _check_local_root(path: Path, uri: str, param: str) -> None:
    """The first existing folder on the way to ``path`` must be a writable folder."""
    for existing in (path, *path.parents):
        if existing.exists():
            break
    if not existing.is_dir():
        raise InvalidParameterError(param, uri, f"{existing} is a file, not a folder",
                                    "a folder, or a path whose existing parents are folders")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidParameterError(param, uri, f"{existing} is not writable by this process",
                                    "a folder this process may write to")


def check_output_root(uri: str, storage_options: dict[str, Any] | None = None,
                      param: str = "output_uri") -> None:
    """Fail before anything is written when ``uri`` cannot take outputs.

    A local root must lead to a writable folder; an object store's bucket must
    exist and answer. Without this, a typo in the bucket name (or an output
    path under a file) surfaces as a failed write deep in the first task,
    after planning; here it is one clear error naming the URI.
    """
    check_scheme(uri, param)
    if is_local(uri):
        _check_local_root(Path(local_path(uri)).expanduser().absolute(), uri, param)
        return
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
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"  # one per writer: two runs may write the same index at once
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as fh:  # object stores replace whole objects
            fh.write(data)


# A creation lock older than this was left by a killed process: taken over.
STALE_LOCK_SECONDS = 600.0


@contextmanager
def creating(uri: str) -> Iterator[None]:
    """Held while the output at ``uri`` is adopted or created, so two runs of one request agree on it.

    Two runs of one request that start together would each find nothing, and
    the second would remove the first's new store (and the shards it had
    written) to create its own. Under this lock the second finds the first's
    marker and adopts its generation: both then write the same shards and
    both complete. Local paths get an ``O_EXCL`` lock file beside the output;
    object stores have no cheap lock, and there concurrent identical runs
    are not guarded against.
    """
    if not is_local(uri):
        yield
        return
    target = Path(local_path(uri))
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
                    lock.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)
        lock.unlink(missing_ok=True)


def open_input(uri: str, storage_options: dict[str, Any] | None = None):
    return fsspec.open(uri, "rb", **(storage_options or {}))


# Every engine step that touches storage takes the fsspec options of each URI it opens
# from a function (the config's ``storage_options_for``): one source of credentials.
OptionsFor = Callable[[str], dict[str, Any]]


def no_options(uri: str) -> dict[str, Any]:
    """Default ``OptionsFor``: fsspec's defaults for every URI (local files, public buckets)."""
    return {}
