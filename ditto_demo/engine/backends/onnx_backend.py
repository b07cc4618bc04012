"""ONNX Runtime backend: runs an ONNX file and presents its tensors under our binding names."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from ditto_demo.engine.backends.base import Dim, Network
from ditto_demo.engine.integrity import file_problem, repair_command
from ditto_demo.engine.specs import Binding, NetworkSpec, OnnxSource
from ditto_demo.errors import BackendUnavailableError, CheckpointError

__all__ = ["OnnxNetwork", "fix_gridsample_opset", "onnx_providers"]

log = logging.getLogger(__name__)

#: The first default-domain opset in which GridSample accepts 5-D (volumetric) inputs.
GRIDSAMPLE_5D_OPSET = 20
_MODE_RENAMES = {b"bilinear": b"linear", b"bicubic": b"cubic"}


def fix_gridsample_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make a 5-D GridSample graph exported at opset 16/17 loadable (in place; returns ``model``).

    ``warp_network_ori.onnx`` uses GridSample on 5-D tensors but declares opset 17, where the op is 2-D only, so
    ONNX Runtime refuses it. Opset 20 generalised the op to N-D and renamed its interpolation modes
    (``bilinear`` -> ``linear``, ``bicubic`` -> ``cubic``). Raising the declared opset and renaming the mode is
    the whole repair: the weights and every other node are untouched (the graph's other ops mean the same at 20).
    """
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < GRIDSAMPLE_5D_OPSET:
            opset.version = GRIDSAMPLE_5D_OPSET
    model.ir_version = max(model.ir_version, 9)  # IR 9 is the first that may declare opset 20
    for node in _all_nodes(model.graph):
        if node.op_type == "GridSample" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "mode" and attr.s in _MODE_RENAMES:
                    attr.s = _MODE_RENAMES[attr.s]
    return model


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_nodes(sub)


def _accepted_shape(declared: list[int | str | None], binding: Binding) -> tuple[Dim, ...]:
    """The file's fixed sizes; where the file is symbolic, the spec's named range for that axis (or any size)."""
    if len(declared) != len(binding.shape):
        return tuple(d if isinstance(d, int) else None for d in declared)
    return tuple(d if isinstance(d, int) else want for d, want in zip(declared, binding.shape, strict=True))


def onnx_providers(device: str) -> list[str]:
    """Execution providers for ``device``: CUDA first when asked for and present, the CPU always as fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                "ONNX Runtime here has no CUDA support; install onnxruntime-gpu or use --device cpu."
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxNetwork(Network):
    backend = "onnx"

    def __init__(self, spec: NetworkSpec, path: Path, source: OnnxSource, device: str) -> None:
        super().__init__(spec, device)
        import onnxruntime as ort

        self.path = path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings from ORT about unused initialisers are noise to a user
        providers = onnx_providers(device)
        try:
            model: str | bytes = str(path)
            if source.fixup == "gridsample_opset20":
                model = fix_gridsample_opset(onnx.load(str(path))).SerializeToString()
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # ORT's own error classes derive from Exception only (Fail, InvalidGraph, ...)
            damage = file_problem(path)
            reason = f"it {damage}" if damage else f"{type(exc).__name__}: {exc}"
            raise CheckpointError(
                f"ONNX Runtime cannot load {path} ({reason}); {repair_command(path.parents[1], 'onnx')}."
            ) from exc
        file_inputs = [i.name for i in self.session.get_inputs()]
        file_outputs = [o.name for o in self.session.get_outputs()]
        self._feed_names = dict(zip(spec.input_names, source.inputs or spec.input_names, strict=True))
        wanted = source.outputs or spec.output_names
        self._fetch_names = [file_outputs[o] if isinstance(o, int) else o for o in wanted]
        absent = [n for n in self._feed_names.values() if n not in file_inputs]
        absent += [n for n in self._fetch_names if n not in file_outputs]
        if absent:
            raise CheckpointError(
                f"{path} does not have the tensors {absent} that {spec.name} needs "
                f"(it has inputs {file_inputs} and outputs {file_outputs})."
            )
        declared = {i.name: i.shape for i in self.session.get_inputs()}
        self.input_shapes = {b.name: _accepted_shape(declared[self._feed_names[b.name]], b) for b in spec.inputs}
        log.debug("onnx %s: %s on %s", spec.name, path, self.session.get_providers())

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self._fetch_names, {self._feed_names[k]: v for k, v in feeds.items()})
        return dict(zip(self.output_names, results, strict=True))
