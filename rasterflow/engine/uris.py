"""URIs: one string type for every place data lives (path, file://, s3://, ...).

fsspec opens them for Zarr and Parquet; GDAL (through rasterio) opens tiles,
and understands ``s3://``, ``gs://``, ``https://`` itself via its /vsi handlers.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

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
