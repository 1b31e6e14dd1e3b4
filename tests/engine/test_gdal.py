from __future__ import annotations

from rasterflow.engine.gdal import gdal_credentials, gdal_env


def test_gdal_env_from_s3_storage_options(monkeypatch):
    """One endpoint in rasterflow.yaml configures GDAL's /vsis3/ as it configures s3fs."""
    monkeypatch.delenv("GDAL_HTTP_MAX_RETRY", raising=False)
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")  # the environment wins over our default
    options = {"endpoint_url": "http://127.0.0.1:9000", "key": "k", "secret": "s", "requester_pays": True,
               "client_kwargs": {"region_name": "eu-west-1"}}
    env = gdal_env(storage_options=options)
    assert env["AWS_S3_ENDPOINT"] == "127.0.0.1:9000"
    assert (env["AWS_HTTPS"], env["AWS_VIRTUAL_HOSTING"]) == ("NO", "FALSE")
    assert (env["AWS_REGION"], env["AWS_REQUEST_PAYER"]) == ("eu-west-1", "requester")
    assert env["GDAL_HTTP_MAX_RETRY"] == "5" and "GDAL_HTTP_RETRY_DELAY" not in env
    assert not any(k.startswith("AWS_") and "KEY" in k for k in env)  # credentials go through a session
    assert gdal_credentials(options) == {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}

    virtual = gdal_env(storage_options={"endpoint_url": "https://s3.example.org/",
                                        "config_kwargs": {"s3": {"addressing_style": "virtual"}},
                                        "anon": True})
    assert (virtual["AWS_S3_ENDPOINT"], virtual["AWS_HTTPS"], virtual["AWS_VIRTUAL_HOSTING"]) == (
        "s3.example.org", "YES", "TRUE")
    assert virtual["AWS_NO_SIGN_REQUEST"] == "YES"
    assert gdal_env(requester_pays=True)["AWS_REQUEST_PAYER"] == "requester"
    assert "AWS_S3_ENDPOINT" not in gdal_env() and gdal_credentials(None) == {}
