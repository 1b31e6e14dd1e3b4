"""docs/workflows.md holds each workflow's signature and parameter table as the code declares them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_parameter_docs.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_parameter_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_parameter_tables_are_up_to_date():
    script = load_script()
    text = script.DOC.read_text()
    assert script.update(text) == text, "run: python scripts/make_parameter_docs.py"


def test_every_parameter_of_every_workflow_is_described():
    script = load_script()
    for method, model in script.MODELS.items():
        for name, field in model.model_fields.items():
            assert field.description and len(field.description) > 20, (method, name)
