"""publish-outputs: artifacts for people in the Prefect UI.

Every flow ends with one: a table of what it wrote (one row per output: URI,
footprint, bands, size) and a markdown summary with a quicklook of the first
output. The picture is a PNG inlined as a data: URI, so the UI shows it with
no access to the outputs' storage and offline. Progress artifacts come from
``flows.runtime.wait_reporting`` while the partitions run.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from ..config import current_config
from ..engine.publish import outputs, quicklook


@task(name="publish-outputs", persist_result=False)
def publish_stores(workflow: str, index_uri: str, summary: str) -> list[dict[str, Any]]:
    """Table of the stores an index lists; summary with a quicklook of the first."""
    config = current_config()
    rows = outputs.store_rows(index_uri, config.storage_options_for)
    create_table_artifact(rows, key=artifact_key(workflow, index_uri, "outputs"),
                          description=f"Stores written by this run ({index_uri})")
    first: dict[str, Any] = rows[0] if rows else {"location": None, "bands": ""}
    shown = quicklook.drawn_bands(first["bands"].split(", "))
    caption = f"{first['location']}: {', '.join(shown)} as {'RGB' if len(shown) == 3 else 'a colour ramp'}"
    picture = _picture(quicklook.store_png, first["location"], f"{caption}, first time slot")
    create_markdown_artifact(f"{summary}\n\n{picture}", key=artifact_key(workflow, index_uri, "summary"),
                             description=f"{workflow} summary")
    return rows


@task(name="publish-outputs", persist_result=False)
def publish_polygons(workflow: str, uri: str | None, features: list[str],
                     summary: str) -> list[dict[str, Any]]:
    """Table of the GeoParquet written (none when no polygon passed); summary with its polygons drawn."""
    config = current_config()
    rows = [outputs.polygons_row(uri, features, config.storage_options_for(uri))] if uri else []
    key_of = uri or summary
    create_table_artifact(rows, key=artifact_key(workflow, key_of, "outputs"),
                          description="GeoParquet written by this run")
    picture = _picture(quicklook.polygons_png, uri, f"{uri}: polygons")
    create_markdown_artifact(f"{summary}\n\n{picture}", key=artifact_key(workflow, key_of, "summary"),
                             description=f"{workflow} summary")
    return rows


def artifact_key(workflow: str, output: str, kind: str) -> str:
    """One key per request: ``<workflow>-<request id>-<kind>``, the id being the output folder's name,
    so a key's history in the UI is the history of one request (one AOI, one set of parameters)."""
    folder = output.rstrip("/").rsplit("/", 2)[-2] if "/" in output else output
    request = re.sub(r"[^a-z0-9-]", "-", folder.lower())[:32]
    return f"{workflow}-{request}-{kind}"


def _picture(render, uri: str | None, caption: str) -> str:
    """Markdown of an inlined quicklook of ``uri``; a picture never fails a finished run."""
    if uri is None:
        return ""
    try:
        png = render(uri, current_config().storage_options_for(uri))
    except Exception as exc:  # the outputs are committed; a broken picture is only a warning
        get_run_logger().warning("no quicklook of %s: %s", uri, exc)
        return f"_No quicklook: {exc}_"
    return f"![quicklook]({_data_uri(png)})\n\n_{caption}_"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
