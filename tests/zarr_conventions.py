"""Validation of stores against the published zarr-conventions schemas (copies in tests/conventions/)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import referencing
import referencing.exceptions

FOLDER = Path(__file__).resolve().parent / "conventions"
SCHEMAS = {name: json.loads((FOLDER / f"{name}-v0.1.schema.json").read_text())
           for name in ("spatial", "proj", "multiscales")}


def _offline(uri: str):
    """Remote references are never fetched (proj's PROJJSON one applies only to proj:projjson)."""
    raise referencing.exceptions.NoSuchResource(ref=uri)


def errors(document: dict, convention: str) -> list[str]:
    """What ``document`` (a node's whole zarr.json) breaks of ``convention``'s published schema.

    The schemas say draft 7 but are written for later drafts: definitions under
    ``$defs``, and spatial's and proj's ``attributes`` put ``$ref`` beside the
    ``zarr_conventions`` check, a sibling draft 7 ignores (so nothing would check
    the declaration). Validated as 2020-12, every keyword applies, as written.
    """
    schema = SCHEMAS[convention]
    validator = jsonschema.Draft202012Validator(schema, registry=referencing.Registry(retrieve=_offline))
    return [f"{convention}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


def node(path: Path | str) -> dict:
    """A Zarr v3 node's metadata document (``zarr.json``)."""
    return json.loads((Path(path) / "zarr.json").read_text())


def assert_follows(path: Path | str, *conventions: str) -> dict:
    """The node at ``path`` validates against each convention's published schema; its document."""
    document = node(path)
    problems = [p for c in conventions for p in errors(document, c)]
    assert not problems, problems
    return document
