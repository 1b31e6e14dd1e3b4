"""Every workflow on object storage: a real S3 server (moto) on loopback, real s3fs and GDAL /vsis3/.

Inputs (the Landsat sample's COG tiles and tiles.parquet, an AOI, the shipped
model) are uploaded to a bucket; outputs and task results go to another. The
chain build_gti_mosaic -> predict_mosaic -> vectorize_mosaic (and
build_zarr_multiscales) must give exactly what it gives on local files, also
when a fault proxy fails 20% of all storage requests with S3's own transient
errors; permanent errors must fail at once, naming the URI.
"""

from __future__ import annotations

import time

import geopandas as gpd
import numpy as np
import pytest
import s3fs
from prefect_runs import task_states
from s3_server import ACCESS_KEY, SECRET_KEY
from shapely.geometry import box

from rasterflow import InferenceActorEnum, MergeModeEnum, RasterflowClient
from rasterflow.config import RasterflowConfig
from rasterflow.engine.index import read_index
from rasterflow.engine.store import open_store
from rasterflow.errors import InvalidParameterError, RasterflowError, StorageError

RGB = ["blue", "green", "red"]
AOI = box(-54.62, -25.40, -54.52, -25.32)  # about 340 x 300 px of the sample at 30 m


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch):
    """Nothing here may reach for a real AWS account, metadata service or profile."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def s3_config(proxy, output_uri: str, *, credentials: bool = True, max_workers: int = 2) -> RasterflowConfig:
    keys = {"key": ACCESS_KEY, "secret": SECRET_KEY} if credentials else {}
    options = {"endpoint_url": proxy.endpoint} | keys
    return RasterflowConfig(output_uri=output_uri, storage_options={"s3": options}, max_workers=max_workers,
                            retries=3, retry_delay_seconds=0.1)


def s3_options(proxy) -> dict:
    return RasterflowConfig(storage_options={"s3": {"endpoint_url": proxy.endpoint, "key": ACCESS_KEY,
                                                     "secret": SECRET_KEY}}).storage_options_for("s3://")


@pytest.fixture(scope="module")
def inputs(s3_proxy, landsat, tmp_path_factory) -> dict[str, str]:
    """The sample, an AOI and the shipped model in s3://inputs; an empty s3://outputs."""
    from predict_fixtures import SHIPPED_MODEL

    fs = s3fs.S3FileSystem(endpoint_url=s3_proxy.endpoint, key=ACCESS_KEY, secret=SECRET_KEY)
    for bucket in ("inputs", "outputs"):
        fs.mkdir(bucket)
    aoi = tmp_path_factory.mktemp("s3-aoi") / "aoi.parquet"
    gpd.GeoDataFrame(geometry=[AOI], crs="EPSG:4326").to_parquet(aoi)
    fs.put([str(p) for p in sorted(landsat.glob("*.tif"))] + [str(landsat / "tiles.parquet")],
           "inputs/landsat/")
    fs.put(str(aoi), "inputs/aoi.parquet")
    fs.put(str(SHIPPED_MODEL), "inputs/models/landsat8_water.pt2")
    local = {"gti": str(landsat / "tiles.parquet"), "aoi": str(aoi), "model": str(SHIPPED_MODEL)}
    remote = {"gti": "s3://inputs/landsat/tiles.parquet", "aoi": "s3://inputs/aoi.parquet",
              "model": "s3://inputs/models/landsat8_water.pt2"}
    return {"local": local, "s3": remote}


def run_chain(client: RasterflowClient, inputs: dict[str, str],
              envs: dict[str, str] | None = None) -> dict[str, str]:
    mosaic = client.build_gti_mosaic(inputs["gti"], inputs["aoi"], RGB, "location", crs_epsg=32621,
                                     xy_chunksize=128, shard_size_bytes=256 * 256 * 6, envs=envs)
    predictions = client.predict_mosaic(
        mosaic, inputs["model"], patch_size=128, clip_size=8, device="cpu", features=RGB,
        labels=["land", "water"], actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH, max_batch_size=8,
        merge_mode=MergeModeEnum.WEIGHTED_AVERAGE, xy_block_multiplier=2, envs=envs,
    )
    polygons = client.vectorize_mosaic(predictions, ["water"], 0.5, vectorize_config={"connectivity": 8},
                                       xy_block_multiplier=2, envs=envs)
    return {"mosaic": mosaic, "predictions": predictions, "polygons": polygons}


def pixels(index_uri: str, options: dict | None = None) -> np.ndarray:
    [location] = read_index(index_uri, options).location
    return open_store(location, options)["variables"].values


def assert_same_chain(got: dict[str, str], got_options: dict, want: dict[str, str]) -> None:
    assert np.array_equal(pixels(got["mosaic"], got_options), pixels(want["mosaic"]))
    assert np.array_equal(pixels(got["predictions"], got_options),
                          pixels(want["predictions"]), equal_nan=True)
    got_polygons, want_polygons = read_index(got["polygons"], got_options), read_index(want["polygons"])
    assert len(want_polygons) > 0
    assert got_polygons.drop(columns="geometry").equals(want_polygons.drop(columns="geometry"))
    assert list(got_polygons.geometry.to_wkb()) == list(want_polygons.geometry.to_wkb())


@pytest.fixture(scope="module")
def local_chain(inputs, tmp_path_factory) -> dict[str, str]:
    client = RasterflowClient(RasterflowConfig(output_uri=str(tmp_path_factory.mktemp("local-chain")),
                                               max_workers=2))
    return run_chain(client, inputs["local"])


@pytest.fixture(scope="module")
def s3_chain(inputs, s3_proxy) -> dict[str, str]:
    return run_chain(RasterflowClient(s3_config(s3_proxy, "s3://outputs/clean")), inputs["s3"])


def test_chain_on_s3_equals_local_files(s3_chain, local_chain, s3_proxy):
    assert all(uri.startswith("s3://outputs/clean/") for uri in s3_chain.values())
    assert_same_chain(s3_chain, s3_options(s3_proxy), local_chain)


def test_task_results_live_under_the_output_prefix(s3_chain, s3_proxy):
    fs = s3fs.S3FileSystem(**s3_options(s3_proxy))
    results = fs.find("outputs/clean/.prefect-results")
    assert any(name.rsplit("/", 1)[1].startswith("build-shard-") for name in results)
    assert any(name.rsplit("/", 1)[1].startswith("infer-block-") for name in results)


def test_rerun_recomputes_only_results_missing_from_the_bucket(s3_chain, inputs, s3_proxy):
    """The cache is the objects under <output>/.prefect-results: lose two, and only those two run again."""
    fs = s3fs.S3FileSystem(**s3_options(s3_proxy))
    shard_results = sorted(n for n in fs.find("outputs/clean/.prefect-results")
                           if n.rsplit("/", 1)[1].startswith("build-shard-"))
    assert len(shard_results) >= 4
    fs.rm(shard_results[:2])
    client = RasterflowClient(s3_config(s3_proxy, "s3://outputs/clean"))
    again = client.build_gti_mosaic(inputs["s3"]["gti"], inputs["s3"]["aoi"], RGB, "location", crs_epsg=32621,
                                    xy_chunksize=128, shard_size_bytes=256 * 256 * 6)
    assert again == s3_chain["mosaic"]
    states = task_states("build-gti-mosaic", "build-shard")
    assert states.count("Completed") == 2
    assert states.count("Cached") == len(shard_results) - 2


def test_multiscales_on_s3_equals_local_files(s3_chain, local_chain, s3_proxy, tmp_path):
    s3_client = RasterflowClient(s3_config(s3_proxy, "s3://outputs/clean"))
    local_client = RasterflowClient(RasterflowConfig(output_uri=str(tmp_path), max_workers=2))
    got = s3_client.build_zarr_multiscales(s3_chain["mosaic"], levels=2)
    want = local_client.build_zarr_multiscales(local_chain["mosaic"], levels=2)
    options = s3_options(s3_proxy)
    [got_root], [want_root] = read_index(got, options).location, read_index(want).location
    for level in ("0", "1"):
        got_level = open_store(f"{got_root}/{level}", options)["variables"].values
        assert np.array_equal(got_level, open_store(f"{want_root}/{level}")["variables"].values)


def test_chain_survives_20_percent_failed_requests(inputs, local_chain, s3_proxy):
    """A seeded fifth of all requests (s3fs, GDAL, Prefect results) get 503 SlowDown or 500:
    the run completes by retries, with output identical to a clean one. Credentials come
    from the environment here, as on a cluster with injected secrets.

    Each fault costs about 0.5 s of botocore back-off (random, doubling), mostly
    in serial steps (plan, create, commit): four workers overlap what they can.
    """
    client = RasterflowClient(s3_config(s3_proxy, "s3://outputs/faulty", credentials=False, max_workers=4))
    envs = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "GDAL_HTTP_RETRY_DELAY": "0.05"}
    failed_before = s3_proxy.counts["failed"]
    s3_proxy.failing = True
    try:
        faulty = run_chain(client, inputs["s3"], envs=envs)
    finally:
        s3_proxy.failing = False
    assert s3_proxy.counts["failed"] - failed_before > 50
    assert_same_chain(faulty, s3_options(s3_proxy), local_chain)


def test_requester_pays_reaches_gdal_and_s3fs(inputs, s3_proxy):
    fs = s3fs.S3FileSystem(**s3_options(s3_proxy))
    fs.copy("inputs/landsat/", "inputs/payer/", recursive=True)  # objects no reader has cached yet
    client = RasterflowClient(s3_config(s3_proxy, "s3://outputs/payer"))
    start = len(s3_proxy.requests)
    client.build_gti_mosaic("s3://inputs/payer/tiles.parquet", inputs["s3"]["aoi"], RGB, "location",
                            crs_epsg=32621, xy_chunksize=128, shard_size_bytes=256 * 256 * 6,
                            requester_pays=True)
    reads = [r for r in s3_proxy.requests[start:] if r[1].startswith("/inputs/payer/")]
    by_gdal = [r for r in reads if r[2].startswith("GDAL")]
    by_s3fs = [r for r in reads if not r[2].startswith("GDAL")]
    assert by_gdal and by_s3fs
    assert all(r[3] == "requester" for r in by_gdal + by_s3fs)


def test_missing_output_bucket_fails_before_anything_runs(inputs, s3_proxy):
    client = RasterflowClient(s3_config(s3_proxy, "s3://no-such-bucket/out"))
    with pytest.raises(InvalidParameterError, match="s3://no-such-bucket/out.*does not exist") as info:
        client.build_gti_mosaic(inputs["s3"]["gti"], inputs["s3"]["aoi"], RGB, "location")
    assert info.value.param == "output_uri"


def test_missing_tile_object_fails_naming_it(inputs, s3_proxy):
    fs = s3fs.S3FileSystem(**s3_options(s3_proxy))
    index = gpd.read_parquet("s3://inputs/landsat/tiles.parquet", filesystem=fs)
    index.loc[0, "location"] = "LC08_missing.tif"
    with fs.open("inputs/landsat/tiles-missing.parquet", "wb") as fh:
        index.to_parquet(fh)
    client = RasterflowClient(s3_config(s3_proxy, "s3://outputs/missing"))
    with pytest.raises(InvalidParameterError,
                       match="s3://inputs/landsat/LC08_missing.tif: tile file does not exist") as info:
        client.build_gti_mosaic("s3://inputs/landsat/tiles-missing.parquet", inputs["s3"]["aoi"],
                                RGB, "location")
    assert info.value.param == "gti"  # the index that selected it, found by the plan before any run


def test_refused_write_fails_fast_without_retries(inputs, s3_proxy):
    """403 on every shard write: each build-shard task fails once (no Prefect, botocore or s3fs
    retry: the proxy sees one request per partition) with the store URI in the error."""
    client = RasterflowClient(s3_config(s3_proxy, "s3://outputs/denied"))
    s3_proxy.deny = lambda method, path: method == "PUT" and "/variables/c/" in path
    denied_before = s3_proxy.counts["denied"]
    try:
        with pytest.raises(StorageError, match=r"s3://outputs/denied/.*\.zarr: access denied") as info:
            client.build_gti_mosaic(inputs["s3"]["gti"], inputs["s3"]["aoi"], RGB, "location", crs_epsg=32621,
                                    xy_chunksize=128, shard_size_bytes=256 * 256 * 6)
    finally:
        s3_proxy.deny = None
    assert isinstance(info.value, RasterflowError) and not info.value.transient
    denied = s3_proxy.counts["denied"] - denied_before
    assert denied >= 2  # one per partition that has data to write
    # Task run states reach the API as events, a moment after the flow returns.
    deadline = time.monotonic() + 30
    while (len(states := task_states("build-gti-mosaic", "build-shard")) < denied
           and time.monotonic() < deadline):
        time.sleep(0.5)
    assert states == ["Failed"] * denied  # one request per task: nothing retried


def test_refused_tile_read_fails_naming_the_tile(inputs, s3_proxy):
    """403 on the tiles (GDAL's reads and s3fs' stat alike): permanent, so the plan stops at once, naming
    the index that selected the tile."""
    fs = s3fs.S3FileSystem(**s3_options(s3_proxy))
    fs.copy("inputs/landsat/", "inputs/forbidden/", recursive=True)
    client = RasterflowClient(s3_config(s3_proxy, "s3://outputs/forbidden"))
    s3_proxy.deny = lambda method, path: path.startswith("/inputs/forbidden/LC08")
    try:
        with pytest.raises(InvalidParameterError,
                           match=r"s3://inputs/forbidden/LC08_\S+\.tif: cannot open tile") as info:
            client.build_gti_mosaic("s3://inputs/forbidden/tiles.parquet", inputs["s3"]["aoi"],
                                    RGB, "location")
    finally:
        s3_proxy.deny = None
    assert info.value.param == "gti"


def test_build_mosaic_reads_scenes_and_catalog_from_s3(s3_proxy, stac_api, stac_sample, haiti, tmp_path):
    """NAIP-like scenes and their stac-geoparquet catalog in a bucket; the store equals the local one."""
    import json
    import subprocess

    from stac_fixtures import rustac_executable, stac_config

    from rasterflow.config import DatasetSource
    from rasterflow.enums import DatasetEnum

    fs = s3fs.S3FileSystem(endpoint_url=s3_proxy.endpoint, key=ACCESS_KEY, secret=SECRET_KEY)
    fs.mkdirs("inputs", exist_ok=True)
    fs.mkdirs("outputs", exist_ok=True)
    folder = stac_sample["naip"]
    items = json.loads((folder / "items.json").read_text())
    for item in items["features"]:
        for asset in item["assets"].values():
            local = asset["href"]
            asset["href"] = f"s3://inputs/naip/{item['id']}/{local.rsplit('/', 1)[1]}"
            fs.put(local, asset["href"])
    (tmp_path / "items.json").write_text(json.dumps(items))
    subprocess.run([rustac_executable(), "translate", str(tmp_path / "items.json"),
                    str(tmp_path / "items.parquet")], check=True)
    fs.put(str(tmp_path / "items.parquet"), "inputs/naip/items.parquet")

    call = dict(datasets=[DatasetEnum.NAIP_60CM], aoi=str(haiti / "aoi.geojson"), start="2019-01-01",
                end="2019-12-31", crs_epsg=32618, resolution=5.0, xy_chunksize=64)
    config = s3_config(s3_proxy, "s3://outputs/build-mosaic").model_copy(
        update={"datasets": {DatasetEnum.NAIP_60CM: DatasetSource(geoparquet="s3://inputs/naip/items.parquet")}})
    got = RasterflowClient(config).build_mosaic(**call)
    want = RasterflowClient(stac_config(stac_api, tmp_path / "local")).build_mosaic(**call)
    options = s3_options(s3_proxy)
    got_pixels = open_store(read_index(got, options).location[0], options)["variables"].values
    want_pixels = open_store(read_index(want).location[0])["variables"].values
    assert got.startswith("s3://outputs/") and (want_pixels != 0).any()
    np.testing.assert_array_equal(got_pixels, want_pixels)
