"""publish-outputs: artifacts for people in the Prefect UI.

Every flow ends with one: a table of what it wrote (one row per output: URI,
footprint, bands, size) and a markdown summary with a quicklook of the first
output. The picture (a PNG with its legend and scale bar, framed in SVG) is
inlined as a data: URI, so the UI shows it with no access to the outputs'
storage and offline. Progress artifacts come from
``flows.runtime.wait_reporting`` while the partitions run.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from ..config import current_config
from ..engine import uris
from ..engine.publish import legend, outputs, quicklook


@task(name="publish-outputs", persist_result=False)
def publish_stores(workflow: str, index_uri: str, summary: str) -> list[dict[str, Any]]:
    """Table of the stores an index lists; summary with their URIs and a quicklook of the first."""
    config = current_config()
    rows = outputs.store_rows(index_uri, config.storage_options_for)
    folder = uris.parent(index_uri)
    create_table_artifact(_table(rows), key=artifact_key(workflow, index_uri, "outputs"),
                          description=f"Stores written under `{folder}` (index `{index_uri}`); footprint: "
                                      "west, south, east, north in degrees (EPSG:4326)")
    first: dict[str, Any] = rows[0] if rows else {"location": None, "bands": ""}
    shown = quicklook.drawn_bands(first["bands"].split(", "))
    drawn_as = "RGB" if len(shown) == 3 else "a colour ramp"
    caption = f"{first.get('store', '')}: {', '.join(shown)} as {drawn_as}, first time slot"
    picture = _picture(quicklook.store_quicklook, first["location"], caption)
    create_markdown_artifact(f"{summary}\n\n{_listing(rows)}\n\n{picture}",
                             key=artifact_key(workflow, index_uri, "summary"),
                             description=f"{workflow} summary")
    return rows


@task(name="publish-outputs", persist_result=False)
def publish_polygons(workflow: str, uri: str | None, features: list[str],
                     summary: str) -> list[dict[str, Any]]:
    """Table of the GeoParquet written (none when no polygon passed); summary with its polygons drawn."""
    config = current_config()
    rows = [outputs.polygons_row(uri, features, config.storage_options_for(uri))] if uri else []
    key_of = uri or summary
    create_table_artifact(_table(rows), key=artifact_key(workflow, key_of, "outputs"),
                          description=f"GeoParquet written by this run{f' (`{uri}`)' if uri else ''}; "
                                      "footprint: west, south, east, north in degrees (EPSG:4326)")
    picture = _picture(lambda u, o: quicklook.polygons_quicklook(u, o, names=features), uri,
                       f"{rows[0]['file']}: polygons" if rows else "")
    create_markdown_artifact(f"{summary}\n\n{picture}", key=artifact_key(workflow, key_of, "summary"),
                             description=f"{workflow} summary")
    return rows


def _table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the UI's table shows them: without the full URI (the description gives the folder)."""
    return [{k: v for k, v in row.items() if k != "location"} for row in rows]


def _listing(rows: list[dict[str, Any]], most: int = 10) -> str:
    """The outputs' full URIs, to copy (the first ``most``; the index lists them all)."""
    lines = [f"- `{row['location']}`" for row in rows[:most]]
    if len(rows) > most:
        lines.append(f"- and {len(rows) - most} more (see the index)")
    return "Outputs:\n\n" + "\n".join(lines) if lines else ""


def artifact_key(workflow: str, output: str, kind: str) -> str:
    """One key per request: ``<workflow>-<request id>-<kind>``, the id being the output folder's name,
    so a key's history in the UI is the history of one request (one AOI, one set of parameters)."""
    folder = output.rstrip("/").rsplit("/", 2)[-2] if "/" in output else output
    request = re.sub(r"[^a-z0-9-]", "-", folder.lower())[:32]
    return f"{workflow}-{request}-{kind}"


def _picture(render, uri: str | None, caption: str) -> str:
    """Markdown of an inlined quicklook of ``uri`` with its legend and scale bar (one SVG image);
    a picture never fails a finished run."""
    if uri is None:
        return ""
    try:
        drawn = render(uri, current_config().storage_options_for(uri))
    except Exception as exc:  # the outputs are committed; a broken picture is only a warning
        get_run_logger().warning("no quicklook of %s: %s", uri, exc)
        return f"_No quicklook: {exc}_"
    return f"![quicklook]({legend.data_uri(legend.svg(drawn))})\n\n_{caption}_"
