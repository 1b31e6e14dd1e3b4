"""GDAL's environment for reading rasters: object-storage options, credentials, read errors.

Storage is configured once, as fsspec's ``storage_options`` (s3fs keys) in
rasterflow.yaml; GDAL's /vsis3/ options are derived from the same settings so
tiles, scenes and stores are read from the same endpoint with the same keys.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import rasterio
from rasterio.session import Session

from ..errors import InputReadError, is_transient
from . import uris

# /vsis3/ retries (GDAL doubles the delay, with jitter, on 429/5xx and dropped
# connections); environment variables of the same names win, so ``envs`` can tune them.
GDAL_RETRY_DEFAULTS = {"GDAL_HTTP_MAX_RETRY": "5", "GDAL_HTTP_RETRY_DELAY": "0.5"}


def gdal_env(requester_pays: bool = False, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """GDAL config options for reading tiles, credentials excepted (see ``gdal_credentials``).

    ``storage_options`` are the s3fs options of the tiles' URI scheme, so an
    endpoint, region or requester-pays setting configured once in rasterflow.yaml
    applies to GDAL's /vsis3/ as it does to s3fs.
    """
    env = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        # GDAL >= 3.9 reads several bands of a warped VRT through a dataset-level
        # path that costs about 2x the warp CPU here; per-band reads give the
        # same pixels (measured: benchmarks/build_gti_mosaic_vs_gdalwarp.py).
        "GDAL_VRT_WARP_USE_DATASET_RASTERIO": "NO",
    }
    env |= {k: v for k, v in GDAL_RETRY_DEFAULTS.items() if k not in os.environ}
    options = storage_options or {}
    client_kwargs = options.get("client_kwargs") or {}
    endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
    if endpoint:
        parts = urlsplit(endpoint)
        env["AWS_S3_ENDPOINT"] = parts.netloc + parts.path.rstrip("/")
        env["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        # Path-style unless the config asks boto for virtual hosting, as s3fs
        # does against custom endpoints (MinIO, Ceph, moto have no bucket DNS).
        style = ((options.get("config_kwargs") or {}).get("s3") or {}).get("addressing_style")
        env["AWS_VIRTUAL_HOSTING"] = "TRUE" if style == "virtual" else "FALSE"
    region = client_kwargs.get("region_name") or options.get("region_name")
    if region:
        env["AWS_REGION"] = region
    if options.get("profile"):
        env["AWS_PROFILE"] = options["profile"]
    if options.get("anon"):
        env["AWS_NO_SIGN_REQUEST"] = "YES"
    if requester_pays or options.get("requester_pays"):
        env["AWS_REQUEST_PAYER"] = "requester"
    return env


def gdal_credentials(storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """GDAL's AWS credential options from s3fs' ``key``/``secret``/``token``, if configured."""
    options = storage_options or {}
    names = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY", "token": "AWS_SESSION_TOKEN"}
    return {names[k]: str(options[k]) for k in names if options.get(k)}


class _ConfiguredCredentials(Session):
    """Credentials from the rasterflow config, handed to GDAL as config options.

    rasterio refuses AWS credentials as plain ``Env`` options and builds its
    ``AWSSession`` from boto3's default chain, which knows nothing of our
    config; a session is the channel it offers for explicit ones.
    """

    def __init__(self, options: dict[str, str]):
        self._options = options

    @classmethod
    def hascreds(cls, config: dict[str, Any]) -> bool:
        return True

    def get_credential_options(self) -> dict[str, str]:
        return dict(self._options)


def tile_env(requester_pays: bool = False, storage_options: dict[str, Any] | None = None) -> rasterio.Env:
    """The rasterio/GDAL environment tiles are opened in.

    Without configured keys GDAL (and rasterio's boto3 session) find credentials
    themselves: environment variables, ~/.aws, instance roles.
    """
    credentials = gdal_credentials(storage_options)
    session = _ConfiguredCredentials(credentials) if credentials else None
    return rasterio.Env(session=session, **gdal_env(requester_pays, storage_options))


def read_error(uri: str, exc: Exception, storage_options: dict[str, Any] | None) -> InputReadError:
    """Why GDAL could not read ``uri``: missing (permanent), refused, or a remote blip (transient)."""
    try:
        present = uris.exists(uri, storage_options)
    except Exception as probe:  # a refused stat (403) is as permanent as a refused read
        return InputReadError(uri, f"cannot open tile ({exc}; {probe})", transient=is_transient(probe))
    if not present:
        return InputReadError(uri, "tile file does not exist")
    # The object is there but GDAL failed: corrupt locally; remotely it may be a blip.
    return InputReadError(uri, f"cannot read tile ({exc})", transient=not uris.is_local(uri))
