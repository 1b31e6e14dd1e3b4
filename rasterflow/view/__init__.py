"""The map viewer: a local web server (``app``) and a page (``static/``) over ``engine.view``.

``rasterflow view URI`` serves it in the foreground; ``client.map_url`` and
``rasterflow server start`` keep one in the background (``rasterflow.services``).
MapLibre GL JS is vendored under ``static/vendor/maplibre-gl`` (from npm, with its
licence): the page needs no network.
"""

from __future__ import annotations

from typing import Any

LOOPBACK = "127.0.0.1"


def serve(config: Any, host: str = LOOPBACK, port: int | None = None) -> None:
    """Serve the viewer until interrupted (``config``: a ``RasterflowConfig``)."""
    import uvicorn

    from .app import LOOPBACK_HOSTS, create_app

    allowed = LOOPBACK_HOSTS if host in (LOOPBACK, "localhost", "::1") else ["*"]
    app = create_app(config.storage_options_for, config.basemap_url, allowed_hosts=allowed)
    uvicorn.run(app, host=host, port=port or config.view_port, log_level="warning", access_log=False)
