"""Scratch files: the patch predictions a phase-0 block shares with its phase-1 neighbours.

One ``.npz`` per sharing block under ``<output dir>/.scratch-prediction-<n>/``;
removed once every block is written. A missing file shares nothing: its block
had no valid pixel, or the run that wrote it was lost, and the patches are run.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .. import uris
from .plan import PredictStorePlan

Patch = tuple[int, int]  # (row, column) index in the global patch grid


def save_shared(uri: str, shared: dict[Patch, np.ndarray],
                storage_options: dict[str, Any] | None = None) -> None:
    """One scratch file of patch predictions (at least one): their indices and a stack of the arrays."""
    buffer = io.BytesIO()
    patches = sorted(shared)
    np.savez(buffer, patches=np.array(patches, np.int64),
             predictions=np.stack([shared[ij] for ij in patches]))
    uris.write_bytes_atomic(uri, buffer.getvalue(), storage_options)


def load_shared(uri_list: list[str],
                storage_options: dict[str, Any] | None = None) -> dict[Patch, np.ndarray]:
    """The predictions in those scratch files; a missing file shares nothing (its block had no valid
    pixel)."""
    known: dict[Patch, np.ndarray] = {}
    for uri in uri_list:
        try:
            with uris.open_input(uri, storage_options) as fh:
                raw = fh.read()
        except FileNotFoundError:
            continue
        with np.load(io.BytesIO(raw)) as npz:
            known.update(zip(map(tuple, npz["patches"].tolist()), npz["predictions"], strict=True))
    return known


def remove_scratch(stores: list[PredictStorePlan],
                   storage_options_for: uris.OptionsFor = uris.no_options) -> None:
    """Drop the predictions blocks shared, once every block is written."""
    for store in stores:
        uris.remove(store.scratch_uri, storage_options_for(store.scratch_uri))
