"""The map viewer's web server: a small FastAPI app over ``engine.view``.

Routes: ``/map?uri=...`` (the page), ``/api/layers?uri=...`` (what the URI
holds), ``/tiles/{layer}/{z}/{x}/{y}.png`` (raster tiles), ``/vectors/{layer}``
(GeoJSON) and ``/vectors/{layer}/{z}/{x}/{y}.pbf`` (vector tiles), ``/health``.
Tiles are drawn only for layers the page asked for with ``/api/layers``:
the server never reads a path a request names directly. It listens on
127.0.0.1 and answers only requests addressed to a loopback host name, so a
web page elsewhere cannot read local files through it (DNS rebinding).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..engine.view import layers as layer_info
from ..engine.view import tiles as raster_tiles
from ..engine.view import vectors
from ..errors import RasterflowError

STATIC = Path(str(resources.files("rasterflow.view").joinpath("static")))
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
# Tiles are fixed by the store's content, and a store is replaced under a new request id: cache a day.
TILE_CACHE = "public, max-age=86400"


class Registry:
    """The layers pages asked for, with their open tile sources (one per store, shared by threads)."""

    def __init__(self, storage_options_for: Callable[[str], dict[str, Any]], cache_dir: Path):
        self.storage_options_for = storage_options_for
        self.cache_dir = cache_dir
        self._layers: dict[str, layer_info.Layer] = {}
        self._sources: dict[str, raster_tiles.TileSource] = {}
        self._lock = threading.Lock()

    def open(self, uri: str) -> list[layer_info.Layer]:
        found = layer_info.layers_of(uri, self.storage_options_for(uri))
        with self._lock:
            for layer in found:
                if self._layers.get(layer.id) != layer:
                    self._layers[layer.id] = layer
                    self._sources.pop(layer.id, None)
        return found

    def layer(self, layer_id: str) -> layer_info.Layer:
        try:
            return self._layers[layer_id]
        except KeyError:
            raise HTTPException(404, f"no layer {layer_id}: open its URI with /api/layers first") from None

    def source(self, layer_id: str) -> raster_tiles.TileSource:
        layer = self.layer(layer_id)
        if not isinstance(layer, layer_info.RasterLayer):
            raise HTTPException(404, f"layer {layer_id} is not a raster")
        with self._lock:
            if layer_id not in self._sources:
                self._sources[layer_id] = raster_tiles.TileSource(layer, self.storage_options_for(layer.uri))
            return self._sources[layer_id]


def _bands(text: str, count: int) -> list[int]:
    try:
        bands = [int(b) for b in text.split(",")]
    except ValueError:
        raise HTTPException(422, f"bands={text!r}: give band positions, e.g. 0 or 2,1,0") from None
    if len(bands) not in (1, 3) or not all(0 <= b < count for b in bands):
        raise HTTPException(422, f"bands={text!r}: one or three positions in 0..{count - 1}")
    return bands


def _limits(text: str | None, count: int) -> list[tuple[float, float]] | None:
    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise HTTPException(422, f"limits={text!r}: give low,high per band drawn") from None
    if len(values) != 2 * count:
        raise HTTPException(422, f"limits={text!r}: {2 * count} numbers (low,high per band drawn)")
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def create_app(storage_options_for: Callable[[str], dict[str, Any]], basemap_url: str | None = None,
               cache_dir: Path | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The viewer app; ``storage_options_for`` gives fsspec options per URI (the config's)."""
    from importlib.metadata import version

    __version__ = version("rasterflow")
    registry = Registry(storage_options_for,
                        cache_dir or Path(tempfile.gettempdir()) / "rasterflow-view-cache")
    app = FastAPI(title="rasterflow viewer", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"viewer": "rasterflow", "version": __version__}

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/map")

    @app.get("/map", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/api/layers")
    def open_layers(uri: str = Query(..., description="store, multiscales store, index or polygons")):
        try:
            found = registry.open(uri)
        except RasterflowError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"uri": uri, "basemap": basemap_url,
                "layers": [_described(layer, registry.cache_dir) for layer in found]}

    @app.get("/tiles/{layer_id}/{z}/{x}/{y}.png")
    def raster_tile(layer_id: str, z: int, x: int, y: int, time: int = 0, bands: str = "0",
                    limits: str | None = None) -> Response:
        source = registry.source(layer_id)
        if not 0 <= time < len(source.layer.times):
            raise HTTPException(422, f"time={time}: a time slice in 0..{len(source.layer.times) - 1}")
        drawn = _bands(bands, len(source.layer.bands))
        png = source.tile(z, x, y, time, drawn, _limits(limits, len(drawn)))
        if png is None:
            return Response(status_code=204, headers={"Cache-Control": TILE_CACHE})
        return Response(png, media_type="image/png", headers={"Cache-Control": TILE_CACHE})

    _vector_routes(app, registry)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    return app


def _vector_routes(app: FastAPI, registry: Registry) -> None:
    """Polygons: all at once as GeoJSON, or as vector tiles when a layer has too many."""

    @app.get("/vectors/{layer_id}")
    def vector_geojson(layer_id: str) -> Response:
        layer = _vector(registry.layer(layer_id))
        return Response(vectors.geojson(layer, registry.storage_options_for(layer.uri)),
                        media_type="application/geo+json")

    @app.get("/vectors/{layer_id}/{z}/{x}/{y}.pbf")
    def vector_tile(layer_id: str, z: int, x: int, y: int) -> Response:
        layer = _vector(registry.layer(layer_id))
        archive = vectors.mbtiles(layer, registry.cache_dir, registry.storage_options_for(layer.uri))
        data = vectors.vector_tile(archive, z, x, y)
        if data is None:
            return Response(status_code=204)
        return Response(data, media_type="application/vnd.mapbox-vector-tile",
                        headers={"Content-Encoding": "gzip", "Cache-Control": TILE_CACHE})


def _vector(layer: layer_info.Layer) -> layer_info.VectorLayer:
    if not isinstance(layer, layer_info.VectorLayer):
        raise HTTPException(404, f"layer {layer.id} holds no polygons")
    return layer


def _described(layer: layer_info.Layer, cache_dir: Path) -> dict[str, Any]:
    """A layer for the page: its description, legend colours and the URL of its data."""
    described = layer.model_dump(mode="json", exclude={"levels"} if layer.kind == "raster" else set())
    if isinstance(layer, layer_info.RasterLayer):
        described["ramps"] = {kind: raster_tiles.ramp_colours(kind) for kind in raster_tiles.RAMPS}
        for band, entry in zip(layer.bands, described["bands"], strict=True):
            entry["colours"] = raster_tiles.class_colours(band.classes) if band.classes else []
        described["levels"] = len(layer.levels)
        described["tiles"] = f"/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.png"
    else:
        tiled = vectors.too_many_for_geojson(layer)
        described["format"] = "vector-tiles" if tiled else "geojson"
        described["data"] = f"/vectors/{layer.id}/{{z}}/{{x}}/{{y}}.pbf" if tiled else f"/vectors/{layer.id}"
    return described
