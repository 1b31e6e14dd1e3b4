"""The code fingerprint in every cache key sees every module that can change an output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rasterflow.engine.provenance import (
    PACKAGE,
    code_fingerprint,
    request_id,
    source_fingerprint,
    stable_hash,
)


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of the installed package's sources to edit."""
    copy = tmp_path / "rasterflow"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("samples", "models", "__pycache__"))
    return copy


def test_the_installed_package_is_what_is_fingerprinted(package):
    assert source_fingerprint(package) == code_fingerprint()


@pytest.mark.parametrize("module", [
    "engine/build_gti_mosaic/plan.py",  # a workflow's subpackage, two folders down
    "engine/store.py",
    "tasks/build_zarr_multiscales.py",
    "enums.py",  # a kernel's radius decides which tiles a partition reads
])
def test_editing_a_computing_module_changes_the_fingerprint(package, module):
    before = source_fingerprint(package)
    with open(package / module, "a") as fh:
        fh.write("\n# an edit\n")
    assert source_fingerprint(package) != before


def test_a_new_module_in_a_subpackage_changes_it(package):
    before = source_fingerprint(package)
    (package / "engine" / "vectorize_mosaic" / "extra.py").write_text("X = 1\n")
    assert source_fingerprint(package) != before


@pytest.mark.parametrize("module", ["flows/build_gti_mosaic.py", "client.py", "cli.py"])
def test_modules_that_only_orchestrate_do_not(package, module):
    """Flows and the client decide which tasks run, not what a task computes: their edits keep the cache."""
    before = source_fingerprint(package)
    with open(package / module, "a") as fh:
        fh.write("\n# an edit\n")
    assert source_fingerprint(package) == before


def test_request_ids_hash_the_request_and_the_code():
    assert request_id(params={"a": 1}) == request_id(params={"a": 1})
    assert request_id(params={"a": 1}) != request_id(params={"a": 2})
    assert request_id(params={"a": 1}) == stable_hash({"params": {"a": 1}, "code": code_fingerprint()})
