"""The client's checks: the plan they make is the one a local run takes, once."""

from __future__ import annotations

import pytest

from rasterflow.config import RasterflowConfig
from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
from rasterflow.engine.build_gti_mosaic.request import BuildGtiMosaicRequest
from rasterflow.errors import InvalidParameterError
from rasterflow.params import BuildGtiMosaicParams
from rasterflow.tasks import checks


def _params(landsat, **changes) -> BuildGtiMosaicParams:
    return BuildGtiMosaicParams(**(dict(gti=str(landsat / "tiles.parquet"), aoi=str(landsat / "aoi.geojson"),
                                        bands=["red"], location_field="location", crs_epsg=32621,
                                        resolution=120.0) | changes))


def test_a_local_runs_plan_step_takes_the_checks_plan_once(landsat, tmp_path):
    config = RasterflowConfig(output_uri=str(tmp_path / "out"))
    params = _params(landsat, envs={"GDAL_CACHEMAX": "64"})
    checks.check_inputs("build-gti-mosaic", params, config, local=True)
    request = BuildGtiMosaicRequest.parse(**params.flow_parameters())  # what the flow's plan task gets

    def plan_again():
        raise AssertionError("planned twice")

    kept = checks.planned("build-gti-mosaic", request, config.output_uri, plan_again)
    assert kept == plan_gti_mosaic(request, config.output_uri)
    again = checks.planned("build-gti-mosaic", request, config.output_uri, lambda: "planned anew")
    assert again == "planned anew"  # taken once: a later call plans for itself
    assert not (tmp_path / "out").exists()


def test_a_deployment_call_checks_but_keeps_nothing(landsat, tmp_path):
    config = RasterflowConfig(output_uri=str(tmp_path / "out"))
    checks.check_inputs("build-gti-mosaic", _params(landsat), config, local=False)
    assert not checks._PLANS
    with pytest.raises(InvalidParameterError, match="bands=.*nir"):
        checks.check_inputs("build-gti-mosaic", _params(landsat, bands=["nir"]), config, local=False)
