"""Model files (engine/model.py): accepted formats, pickles refused unread, archive checks.

Every refusal test plants a tripwire: an object whose unpickling creates a
file. The file must not exist afterwards, so "refused" means "never
unpickled", not "unpickled, then complained about".
"""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from predict_fixtures import (
    SHIPPED_MODEL,
    Fcn,
    TinyUNet,
    Tripwire,
    export,
    export_even,
    rewrite_zip,
    torch_save_bytes,
)

from rasterflow.engine.predict_mosaic.model import BatchRunner, fetch_model, load_model, probe, resolve_device
from rasterflow.engine.predict_mosaic.model_check import check_pt2_archive, model_format
from rasterflow.errors import InvalidParameterError

# TorchScript is accepted, and torch 2.13 says on every load that it is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

@pytest.fixture(scope="module")
def fcn_pt2(tmp_path_factory):
    return export(Fcn(3, 2), tmp_path_factory.mktemp("models") / "fcn.pt2", 3)


def refused(path, match):
    with pytest.raises(InvalidParameterError, match=match) as err:
        model_format(path)
        check_pt2_archive(path)
    assert err.value.param == "model_path" and "torch.export" in err.value.valid
    return err.value


def test_shipped_model_is_a_plain_pt2_with_dynamic_dims():
    assert model_format(SHIPPED_MODEL) == "pt2"
    check_pt2_archive(SHIPPED_MODEL)
    model = load_model(SHIPPED_MODEL, "shipped", "cpu")
    assert (model.static_batch, model.static_channels, model.static_hw) == (None, 3, (None, None))
    meta = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())
    assert meta["features"] == ["blue", "green", "red"] and meta["labels"] == ["land", "water"]
    assert meta["receptive_field"]["radius"] <= meta["recommended"]["clip_size"]


def test_a_realistic_segmentation_net_passes_the_checks(tmp_path):
    # Derived shape expressions (2 * h), batch norm buffers, pooling, upsampling, concatenation.
    path = export_even(TinyUNet(), tmp_path / "unet.pt2")
    check_pt2_archive(path)
    model = load_model(path, "unet", "cpu")
    x = np.random.default_rng(1).uniform(0, 9000, (3, 3, 96, 128)).astype(np.float32)
    (out,) = BatchRunner(model, n_labels=2, activation=None).run(iter([x]))
    with torch.inference_mode():
        np.testing.assert_allclose(out, TinyUNet().eval()(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_torch_save_checkpoint_is_refused_unread(tmp_path):
    wire = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    torch.save({"model": Tripwire(wire)}, path)
    assert "torch.save checkpoint" in str(refused(path, "pickle"))
    assert not wire.exists()


def test_raw_pickle_is_refused_unread(tmp_path):
    wire = tmp_path / "unpickled"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Tripwire(wire)))
    refused(path, "pickle stream")
    assert not wire.exists()


def test_other_files_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    refused(tmp_path / "notes.txt", "not a PyTorch model archive")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("x/readme.txt", "hello")
    refused(tmp_path / "other.zip", "neither")


def test_missing_model_file_names_the_parameter(tmp_path):
    with pytest.raises(InvalidParameterError, match="no such file") as err:
        fetch_model(str(tmp_path / "absent.pt2"))
    assert err.value.param == "model_path"


def test_fsspec_model_is_fetched_once_to_a_local_file(fcn_pt2, tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("RASTERFLOW_MODEL_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    fs.pipe("/models/fcn.pt2", fcn_pt2.read_bytes())
    local = fetch_model("memory://models/fcn.pt2")
    assert local.parent == tmp_path / "cache" and local.read_bytes() == fcn_pt2.read_bytes()
    assert fetch_model("memory://models/fcn.pt2") == local
    with pytest.raises(InvalidParameterError, match="no such file"):
        fetch_model("memory://models/absent.pt2")


def test_pickled_weights_are_refused(fcn_pt2, tmp_path):
    config_name = "data/weights/model_weights_config.json"
    with zipfile.ZipFile(fcn_pt2) as zf:
        prefix = zf.namelist()[0].split("/", 1)[0] + "/"
        config = json.loads(zf.read(prefix + config_name))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    wire = tmp_path / "unpickled"
    payload = "data/weights/" + config["config"][first]["path_name"]
    path = rewrite_zip(fcn_pt2, tmp_path / "pickled.pt2", replace={
        config_name: json.dumps(config).encode(), payload: torch_save_bytes(Tripwire(wire)),
    })
    refused(path, "pickled object")
    assert not wire.exists()


def test_sample_inputs_that_need_full_pickle_are_refused(fcn_pt2, tmp_path):
    # torch.export.load would retry these with weights_only=False: the check must stop it first.
    wire = tmp_path / "unpickled"
    path = rewrite_zip(fcn_pt2, tmp_path / "inputs.pt2",
                       replace={"data/sample_inputs/model.pt": torch_save_bytes(((Tripwire(wire),), {}))})
    refused(path, "weights-only")
    assert not wire.exists()


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.replace('"torch.ops.aten.conv2d.default"', '"torch.serialization.os.system"', 1),
     "only torch.ops"),
    (lambda s: s.replace("Symbol('s", "__import__('os').system('s", 1), "sympy literal"),
    (lambda s: s.replace('"name": "x"', '"name": "x\\r"', 1), "control characters"),
])
def test_program_text_that_could_run_code_is_refused(fcn_pt2, tmp_path, edit, match):
    with zipfile.ZipFile(fcn_pt2) as zf:
        prefix = zf.namelist()[0].split("/", 1)[0] + "/"
        text = zf.read(prefix + "models/model.json").decode()
    changed = edit(text)
    assert changed != text
    refused(rewrite_zip(fcn_pt2, tmp_path / "edited.pt2", replace={"models/model.json": changed.encode()}),
            match)


def test_compiled_and_unknown_entries_are_refused(fcn_pt2, tmp_path):
    aoti = {"data/aotinductor/model/model.so": b"\x7fELF"}
    refused(rewrite_zip(fcn_pt2, tmp_path / "aoti.pt2", add=aoti), "AOTInductor")
    legacy = {"data/weights/model.pt": b"x"}
    refused(rewrite_zip(fcn_pt2, tmp_path / "legacy.pt2", add=legacy), "does not write")


def test_torchscript_loads_and_agrees_with_the_export(fcn_pt2, tmp_path):
    net = Fcn(3, 2)
    path = tmp_path / "fcn.ts"
    with pytest.warns(Warning):  # torch 2.13 deprecates torch.jit.save
        torch.jit.save(torch.jit.script(net.eval()), path)
    assert model_format(path) == "torchscript"
    x = np.random.default_rng(0).uniform(6000, 9000, (2, 3, 40, 48)).astype(np.float32)
    outs = []
    for p in (path, fcn_pt2):
        runner = BatchRunner(load_model(p, p.name, "cpu"), n_labels=2, activation=None)
        outs.append(next(runner.run(iter([x]))))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_probe_names_the_shape_a_model_fails_on(tmp_path):
    from predict_fixtures import FlattenHead

    path = tmp_path / "flat.ts"
    with pytest.warns(Warning):
        torch.jit.save(torch.jit.script(FlattenHead()), path)
    model = load_model(path, "flat", "cpu")
    assert probe(model, 3, 32, 2, 2) == (2, 2, 32, 32)
    with pytest.raises(InvalidParameterError, match=r"input of shape \(2, 3, 64, 64\)") as err:
        probe(model, 3, 64, 2, 2)
    assert err.value.param == "model_path"


def test_output_channel_count_must_match_the_labels(fcn_pt2):
    model = load_model(fcn_pt2, "fcn", "cpu")
    with pytest.raises(InvalidParameterError, match="returns 2 channels") as err:
        probe(model, 3, 32, 1, 3)
    assert err.value.param == "labels"


def test_a_probed_shape_is_not_run_again_but_still_checked_against_the_labels(fcn_pt2):
    model = load_model(fcn_pt2, "fcn-probed", "cpu")
    calls = []
    model.module.register_forward_hook(lambda *args: calls.append(1))
    assert probe(model, 3, 32, 2, 2) == probe(model, 3, 32, 2, 2) == (2, 2, 32, 32)
    assert len(calls) == 1
    with pytest.raises(InvalidParameterError, match="returns 2 channels") as err:
        probe(model, 3, 32, 2, 3)
    assert err.value.param == "labels" and len(calls) == 1
    probe(model, 3, 64, 2, 2)  # another shape runs
    assert len(calls) == 2


def test_cuda_without_a_gpu_is_refused():
    if torch.cuda.is_available():  # pragma: no cover - the test machines have no GPU
        pytest.skip("a GPU is present")
    with pytest.raises(InvalidParameterError, match="no CUDA GPU") as err:
        resolve_device("cuda")
    assert err.value.param == "device"
    assert resolve_device("auto") == "cpu"


# ---------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def fcn_onnx(tmp_path_factory):
    from predict_fixtures import onnx_fcn

    return onnx_fcn(Fcn(3, 2), tmp_path_factory.mktemp("onnx") / "fcn.onnx")


def onnx_refused(path, match):
    from rasterflow.engine.predict_mosaic.model_check import check_onnx_model

    with pytest.raises(InvalidParameterError, match=match) as err:
        assert model_format(path) == "onnx"
        check_onnx_model(path)
    assert err.value.param == "model_path" and "ONNX" in err.value.valid
    return err.value


def test_onnx_model_runs_like_the_torch_net_and_exactly_like_onnxruntime(fcn_onnx):
    import onnxruntime

    assert model_format(fcn_onnx) == "onnx"
    model = load_model(fcn_onnx, "fcn-onnx", "cpu")
    assert (model.format, model.static_batch, model.static_channels, model.static_hw) == (
        "onnx", None, 3, (None, None))
    x = np.random.default_rng(3).uniform(6000, 9000, (3, 3, 40, 40)).astype(np.float32)
    (out,) = BatchRunner(model, n_labels=2, activation=None).run(iter([x]))
    reference = onnxruntime.InferenceSession(str(fcn_onnx), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    assert np.abs(out - reference).max() == 0.0  # the same runtime: bit for bit
    with torch.inference_mode():
        np.testing.assert_allclose(out, Fcn(3, 2).eval()(torch.from_numpy(x)).numpy(), atol=1e-4)
    assert probe(model, 3, 32, 2, 2) == (2, 2, 32, 32)


def test_onnx_static_dims_are_read_from_the_graph(tmp_path):
    from predict_fixtures import onnx_fcn

    model = load_model(onnx_fcn(Fcn(3, 2), tmp_path / "static.onnx", batch=4, size=64), "static", "cpu")
    assert (model.static_batch, model.static_channels, model.static_hw) == (4, 3, (64, 64))


def _edited(src, dst, edit):
    import onnx

    model = onnx.load_model(str(src))
    edit(model)
    onnx.save_model(model, str(dst))
    return dst


def test_onnx_custom_op_domains_are_refused(fcn_onnx, tmp_path):
    import onnx

    def custom(model):
        model.graph.node[0].domain = "ai.onnx.contrib"
        model.opset_import.append(onnx.helper.make_opsetid("ai.onnx.contrib", 1))

    onnx_refused(_edited(fcn_onnx, tmp_path / "custom.onnx", custom), "custom-op library")


def test_onnx_functions_run_only_with_standard_bodies(fcn_onnx, tmp_path):
    import onnx
    from onnx import helper

    def with_function(op_domain):
        def edit(model):
            body = [helper.make_node("Relu", ["a"], ["r"], domain=op_domain)]
            model.functions.append(helper.make_function(
                "local", "MyRelu", ["a"], ["r"], body, [helper.make_opsetid("", 17)]
                + ([helper.make_opsetid(op_domain, 1)] if op_domain else [])))
            relu = next(n for n in model.graph.node if n.op_type == "Relu")
            relu.op_type, relu.domain = "MyRelu", "local"
            model.opset_import.append(helper.make_opsetid("local", 1))
        return edit

    ok = _edited(fcn_onnx, tmp_path / "function.onnx", with_function(""))
    x = np.random.default_rng(4).uniform(6000, 9000, (1, 3, 24, 24)).astype(np.float32)
    outs = [next(BatchRunner(load_model(p, p.name, "cpu"), 2, None).run(iter([x]))) for p in (ok, fcn_onnx)]
    np.testing.assert_array_equal(outs[0], outs[1])
    onnx_refused(_edited(fcn_onnx, tmp_path / "bad-function.onnx", with_function("evil.ops")),
                 "evil.ops::Relu")
    assert onnx is not None


def test_onnx_tensors_outside_the_file_are_refused_unread(fcn_onnx, tmp_path):
    import onnx

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 64)

    def external(model):
        weight = next(t for t in model.graph.initializer if t.name == "w0")
        weight.ClearField("raw_data")
        weight.ClearField("float_data")
        weight.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", str(secret)), ("offset", "0"), ("length", "64")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value

    err = onnx_refused(_edited(fcn_onnx, tmp_path / "external.onnx", external), "outside the file")
    assert str(secret) in str(err)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.graph.input.append(m.graph.input[0].__class__(name="y2")), "takes 2 inputs"),
    (lambda m: m.graph.output.append(m.graph.output[0].__class__(name="z")), "returns 2 outputs"),
    (lambda m: m.graph.input[0].type.tensor_type.__setattr__("elem_type", 11), "element type 11"),
    (lambda m: m.graph.input[0].type.tensor_type.shape.dim.pop(), "3-d input"),
])
def test_onnx_signatures_predict_mosaic_cannot_feed_are_refused(fcn_onnx, tmp_path, edit, match):
    onnx_refused(_edited(fcn_onnx, tmp_path / "sig.onnx", edit), match)


def test_files_named_onnx_that_are_not_onnx_are_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07garbage that is not a protobuf message \xff\xff")
    onnx_refused(path, "not a valid ONNX model|no graph")
    wire = tmp_path / "unpickled"
    path.write_bytes(pickle.dumps(Tripwire(wire)))
    refused(path, "pickle stream")  # a pickle named .onnx is still a pickle, refused unread
    assert not wire.exists()


def test_onnx_on_cuda_needs_a_gpu_and_onnxruntime_gpu():
    """No GPU on the test machines: the CUDA path of OnnxModule (io binding, DLPack, torch's stream) is
    not run here, and nothing stands in for it. What runs: auto picks the CPU for ONNX unless both torch
    and onnxruntime see a GPU, and explicit cuda fails before any model is loaded."""
    from rasterflow.engine.predict_mosaic.onnx_model import onnxruntime_has_cuda

    if torch.cuda.is_available():  # pragma: no cover - no GPU here
        assert resolve_device("auto", "onnx") == ("cuda" if onnxruntime_has_cuda() else "cpu")
        pytest.skip("a GPU is present")
    assert resolve_device("auto", "onnx") == "cpu"
    with pytest.raises(InvalidParameterError) as err:
        resolve_device("cuda", "onnx")
    assert err.value.param == "device"
