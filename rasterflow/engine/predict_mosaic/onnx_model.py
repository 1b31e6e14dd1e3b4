"""ONNX models, run by onnxruntime behind the interface of a torch module.

Why onnxruntime and not a conversion to a torch program: on the model this
was built for (ukis-csmask, a U-Net with an EfficientNet-B4 encoder, opset
17), onnxruntime runs a 256 px patch in about 0.25 s on this machine's CPU,
while the same graph converted by onnx2torch took minutes per patch and
differed from onnxruntime by up to 0.047 in its logits (measured; see
docs/architecture.md). onnxruntime is the reference implementation of the
ONNX operators, so its outputs are the ones a model's authors validated, it
runs every standard operator, and it has CPU and CUDA execution providers.

``OnnxModule`` takes and returns torch tensors, so ``BatchRunner``, the probe
and the merging treat it as they treat an exported program. On the CPU the
tensors are shared with numpy, not copied. On a GPU (``onnxruntime-gpu``) the
input is bound where torch put it and the output comes back as a CUDA tensor
through DLPack, on torch's current stream (``user_compute_stream``), so the
pinned-buffer pipelining of ``BatchRunner`` applies unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import InvalidParameterError
from .model_check import check_onnx_model, import_onnx_support, refuse

CUDA_PROVIDER = "CUDAExecutionProvider"


def onnxruntime_has_cuda() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return CUDA_PROVIDER in onnxruntime.get_available_providers()


class OnnxModule:
    """An onnxruntime session called like a torch module: ``module(x)`` -> a tensor on x's device."""

    def __init__(self, session: Any, device: str):
        self.session = session
        self.device = device
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def __call__(self, x: Any) -> Any:
        import torch

        if x.device.type == "cpu":
            (out,) = self.session.run([self.output_name], {self.input_name: x.contiguous().numpy()})
            return torch.from_numpy(out)
        return self._run_cuda(x)  # pragma: no cover - no GPU on the test machines

    def _run_cuda(self, x: Any) -> Any:  # pragma: no cover - GPU only
        import numpy as np
        import torch

        x = x.contiguous()
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", x.device.index or 0, np.float32, list(x.shape),
                           x.data_ptr())
        binding.bind_output(self.output_name, "cuda", x.device.index or 0)
        self.session.run_with_iobinding(binding)
        return torch.from_dlpack(binding.get_outputs()[0])


def load_onnx(path: Path, device: str, shown: str) -> tuple[OnnxModule, list[int | None]]:
    """(the module, the input's static dims: None where dynamic) once ``check_onnx_model`` passed."""
    model = check_onnx_model(path, shown)
    ort = import_onnx_support(shown, "onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # shape warnings on outputs with symbolic dims repeat on every run
    if device == "cpu":
        providers: list[Any] = ["CPUExecutionProvider"]
    else:
        providers = _cuda_providers(ort, device, shown)  # pragma: no cover - GPU only
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        raise refuse(shown, f"could not be loaded by onnxruntime {ort.__version__} "
                            f"({type(exc).__name__}: {str(exc)[:300]})") from None
    dims = model.graph.input[[i.name for i in model.graph.input].index(session.get_inputs()[0].name)]
    static = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
              for d in dims.type.tensor_type.shape.dim]
    return OnnxModule(session, device), (static + [None] * 4)[:4]


def _cuda_providers(ort: Any, device: str, shown: str) -> list[Any]:  # pragma: no cover - GPU only
    import torch

    if CUDA_PROVIDER not in ort.get_available_providers():
        raise InvalidParameterError(
            "device", device, f"the ONNX model {shown} would run on onnxruntime {ort.__version__}, which has "
            f"no CUDA provider here (providers: {', '.join(ort.get_available_providers())})",
            "'cpu', 'auto' (a GPU only when onnxruntime can use one), or onnxruntime-gpu installed in "
            "place of onnxruntime",
        )
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    stream = torch.cuda.current_stream(index).cuda_stream
    return [(CUDA_PROVIDER, {"device_id": index, "user_compute_stream": str(stream)}), "CPUExecutionProvider"]
