"""What the map viewer shows, without a web framework: layers, tiles and their pictures.

``layers`` says what a URI holds for a map (raster stores with their bands,
time slices, pyramid levels and colour limits; polygon files), ``tiles`` draws
one web-mercator tile of a raster layer (rio-tiler renders it, morecantile
places it, GDAL warps it), ``vectors`` hands polygons to the browser as
GeoJSON or, when there are too many, as a PMTiles archive GDAL writes.
The web server around them is ``rasterflow.view``.
"""

from __future__ import annotations

from urllib.parse import urlencode

DEFAULT_PORT = 8765


def map_link(uris: str | list[str], base_url: str) -> str:
    """The viewer page of ``uris`` (one or several, drawn together) on the viewer at ``base_url``."""
    listed = [uris] if isinstance(uris, str) else list(uris)
    return f"{base_url.rstrip('/')}/map?{urlencode([('uri', u) for u in listed])}"
