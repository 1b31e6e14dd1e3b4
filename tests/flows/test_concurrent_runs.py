"""Two runs of one request at once, into one output prefix (two schedules, two users, a retry
started by hand): both complete and agree, and the store they share is whole.

Each run is its own process with its own client, as in production; they start
together (released by one file) and share the test's Prefect API. The store
is compared with one built by the engine alone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
from loopback import child_env
from prefect.settings import PREFECT_API_URL

from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
from rasterflow.engine.build_gti_mosaic.shard import build_shard
from rasterflow.engine.index import read_index
from rasterflow.engine.store import commit_store, create_store, open_store, read_marker
from rasterflow.params import BuildGtiMosaicParams

CALL = dict(bands=["red", "green"], location_field="location", crs_epsg=32621, resolution=30.0,
            xy_chunksize=128, shard_size_bytes=256 * 256 * 4)

RUN = """
import sys, time
from pathlib import Path
from rasterflow import RasterflowClient
from rasterflow.config import RasterflowConfig

go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
client = RasterflowClient(RasterflowConfig(output_uri=sys.argv[1], max_workers=2, retries=0))
print(client.build_gti_mosaic(gti=sys.argv[3], aoi=sys.argv[4], **{call}))
"""


def test_two_runs_into_one_prefix_both_complete_with_one_whole_store(landsat, tmp_path):
    out, go = tmp_path / "out", tmp_path / "go"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN.format(call=CALL)))
    env = child_env(PREFECT_API_URL=PREFECT_API_URL.value())
    args = [sys.executable, str(script), str(out), str(go), str(landsat / "tiles.parquet"),
            str(landsat / "aoi.geojson")]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    time.sleep(3)  # both imported and waiting
    go.touch()
    answers = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-3000:] for _, err in answers]
    first, second = (stdout.strip().splitlines()[-1] for stdout, _ in answers)
    assert first == second
    store = read_index(first).location[0]
    assert read_marker(store).complete
    assert not [p for p in out.rglob("*") if p.name.endswith((".lock", ".tmp"))]

    params = BuildGtiMosaicParams(gti=str(landsat / "tiles.parquet"), aoi=str(landsat / "aoi.geojson"),
                                  **CALL)
    plan = plan_gti_mosaic(params, str(tmp_path / "reference"))
    (reference,) = plan.stores
    create_store(reference.spec, reference.fingerprint, plan.provenance)
    for job in reference.jobs:
        build_shard(job)
    commit_store(reference.spec.uri)
    np.testing.assert_array_equal(open_store(store)["variables"].values,
                                  open_store(reference.spec.uri)["variables"].values)
