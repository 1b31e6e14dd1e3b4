"""Each parameter is declared once, in its workflow's request model; everything else agrees with it.

The client's methods and the flows keep explicit signatures (what IDEs, help()
and Prefect's parameter forms read), and the CLI is made from the models. This
checks, for all six workflows, that the client, the parameter model, the flow
and the CLI take the same names, require the same ones, and that their
defaults give the model's own default once validated; and that RasterFlow's
2026 names (aliases, renamed keywords, run_mosaics_change) agree with the
methods they name.

Declared exceptions: every flow also takes ``run_config`` (the caller's config
keys of a deployment run); the client requires predict's ``device``, as
RasterFlow's does, where the model, flow, form and CLI default it to "auto";
the recipe's ``model_path`` is derived by the client and optional in the flow.
"""

from __future__ import annotations

import inspect

import pytest
import typer

from rasterflow import cli
from rasterflow.client import RasterflowClient
from rasterflow.config import RUN_CONFIG
from rasterflow.flows import FLOWS
from rasterflow.params import NON_COMPUTING

# The smallest valid value of each required parameter, to validate defaults against.
REQUIRED = {
    "build-gti-mosaic": dict(gti="i.parquet", aoi="a.geojson", bands=["red"], location_field="location"),
    "build-mosaic": dict(datasets=["s2med_harvest"], aoi="a.geojson", start="2021-01-01", end="2021-12-31"),
    "predict-mosaic": dict(store="s.zarr", model_path="m.pt2", patch_size=64, clip_size=4,
                           features=["red"], labels=["a", "b"], actor="semantic_segmentation_pytorch",
                           max_batch_size=4, merge_mode="clip"),
    "vectorize-mosaic": dict(store="s.zarr", features=["water"], threshold=0.5),
    "build-zarr-multiscales": dict(store="s.zarr"),
    "build-and-predict-mosaic-recipe": dict(aoi="a.geojson", start="2021-01-01", end="2021-12-31",
                                            model_recipe="ftw", model_path="m.pt2"),
}
COMMANDS = {c.name: c for c in cli.COMMANDS}
DERIVED_BY_THE_CLIENT = {"build-and-predict-mosaic-recipe": {"model_path"}}  # from the recipe and the config
REQUIRED_BY_THE_CLIENT = {"predict-mosaic": {"device"}}  # RasterFlow's signature; "auto" elsewhere
OPTIONAL_IN_THE_FLOW = DERIVED_BY_THE_CLIENT  # a run from a form or schedule resolves it on the worker


def cli_options(workflow: str) -> dict:
    """The click parameters of the workflow's command, by name (what ``rasterflow <command>`` takes)."""
    command = typer.main.get_command(cli.app).commands[workflow]
    client_options = ("config", "verbose", "help", "dry_run", "cache")  # the client's, not the workflow's
    return {p.name: p for p in command.params if p.name not in client_options}


def cli_default(workflow: str, name: str):
    """The CLI's default for ``name`` as the client receives it (after the command's own parsing)."""
    option = cli_options(workflow)[name]
    if option.required:
        return ...
    parse = COMMANDS[workflow].shape(name).parse
    default = list(option.default) if option.multiple else option.default
    return parse(default) if parse else default


def signature(fn, drop=("self", "wait")) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items() if n not in drop}


def validated(model, workflow: str, name: str, value):
    """What the model makes of ``value`` given for ``name``."""
    return getattr(model.parse(**(REQUIRED[workflow] | {name: value})), name)


@pytest.fixture(params=sorted(FLOWS))
def workflow(request) -> str:
    return request.param


def test_every_workflow_has_a_method_a_model_a_flow_and_a_command(workflow):
    assert workflow in COMMANDS and hasattr(RasterflowClient, COMMANDS[workflow].method)


def test_names_agree(workflow):
    command = COMMANDS[workflow]
    fields = set(command.params.model_fields)
    derived = DERIVED_BY_THE_CLIENT.get(workflow, set())
    assert set(signature(getattr(RasterflowClient, command.method))) == fields - derived
    assert set(signature(FLOWS[workflow].fn)) == fields - NON_COMPUTING | {RUN_CONFIG}
    assert set(cli_options(workflow)) == fields - set(command.skip)


def test_required_parameters_agree(workflow):
    command = COMMANDS[workflow]
    required = {n for n, f in command.params.model_fields.items() if f.is_required()}
    client = signature(getattr(RasterflowClient, command.method))
    flow = signature(FLOWS[workflow].fn)
    derived = DERIVED_BY_THE_CLIENT.get(workflow, set())
    client_only = REQUIRED_BY_THE_CLIENT.get(workflow, set())
    assert {n for n, p in client.items() if p.default is p.empty} == required - derived | client_only
    assert {n for n, p in flow.items() if p.default is p.empty} == required - OPTIONAL_IN_THE_FLOW.get(
        workflow, set())
    assert set(REQUIRED[workflow]) == required


def test_defaults_agree(workflow):
    """Client, flow and CLI defaults validate to the model's default, parameter by parameter."""
    command = COMMANDS[workflow]
    model = command.params
    client = signature(getattr(RasterflowClient, command.method))
    flow = signature(FLOWS[workflow].fn)
    for name, field in model.model_fields.items():
        if field.is_required():
            continue
        expected = validated(model, workflow, name, field.get_default(call_default_factory=True))
        if name not in REQUIRED_BY_THE_CLIENT.get(workflow, set()):
            assert validated(model, workflow, name, client[name].default) == expected, ("client", name)
        if name in flow:
            assert validated(model, workflow, name, flow[name].default) == expected, ("flow", name)
        assert validated(model, workflow, name, cli_default(workflow, name)) == expected, ("cli", name)


def test_the_cli_adds_defaults_only_where_it_says_so():
    """No required parameter gets a default on the command line alone (device=auto is the model's)."""
    added = {}
    for command in cli.COMMANDS:
        for name, field in command.params.model_fields.items():
            if (field.is_required() and name not in command.skip
                    and cli_default(command.name, name) is not ...):
                added[(command.name, name)] = cli_default(command.name, name)
    assert added == {}
    assert cli_default("predict-mosaic", "device") == "auto"


def test_help_comes_from_the_declarations():
    described = COMMANDS["build-gti-mosaic"].params.model_fields["location_field"].description
    assert cli_options("build-gti-mosaic")["location_field"].help == cli.first_sentence(described)


# RasterFlow's 2026 method names -> the method each is an alias of.
ALIASES = {"build_mosaics": "build_mosaic", "build_gti_mosaics": "build_gti_mosaic",
           "predict_mosaic_recipe": "build_and_predict_mosaic_recipe"}


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_have_their_methods_signature_and_say_so(alias):
    primary = getattr(RasterflowClient, ALIASES[alias])
    method = getattr(RasterflowClient, alias)
    assert inspect.signature(method) == inspect.signature(primary)
    assert method.__name__ == alias and f"``{ALIASES[alias]}``" in method.__doc__


def test_renamed_keywords_name_parameters_of_their_model():
    for command in cli.COMMANDS:
        for new, old in command.params.RENAMED.items():
            assert old in command.params.model_fields and new not in command.params.model_fields
    assert cli.COMMANDS[[c.name for c in cli.COMMANDS].index("predict-mosaic")].params.RENAMED == {
        "mosaics": "store"}


def test_run_mosaics_change_is_predict_mosaic_without_an_actor():
    """Same names (``mosaics`` for ``store``), same required ones, same defaults; the actor is fixed."""
    change = signature(RasterflowClient.run_mosaics_change)
    predict = signature(RasterflowClient.predict_mosaic)
    renamed = {("mosaics" if n == "store" else n): p.default for n, p in predict.items() if n != "actor"}
    assert {n: p.default for n, p in change.items()} == renamed
    assert list(change) == [n for n in renamed]  # same order: positional calls agree
