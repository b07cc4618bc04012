"""Every network's contract, in one table: bindings, precision, and which files each backend reads.

This is the single place that decides, per network, which checkpoint file the PyTorch backend loads, which ONNX
file ONNX Runtime runs (and how that file's own tensor names map onto our binding names), what a TensorRT engine
is built from, which prebuilt engine may be tried, and whether that engine needs the GridSample3D plugin. Backends
read this table; they never hard-code a file name.

Binding names, shapes and precisions follow the released ONNX graphs / TensorRT engines (ditto_spec.md §2.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AUX_NETWORKS",
    "CORE_NETWORKS",
    "MODEL_CONFIG_FILE",
    "NETWORKS",
    "PLUGIN_LIBRARY",
    "PREBUILT_ENGINE_DIR",
    "Binding",
    "NetworkSpec",
    "OnnxSource",
    "get_spec",
]

Precision = Literal["fp16", "fp32"]

#: Our own optional file of constructor arguments ({network: {kwarg: value}}) beside the ``.pth`` files. The
#: released checkpoints do not have it, and then every network uses its released hyper-parameters; test
#: checkpoints (``make-test-checkpoints --size tiny``) write it so tiny networks load with the right shapes.
MODEL_CONFIG_FILE = "ditto_pytorch/models/model_config.json"
#: The released TensorRT 8.6 plugin for the custom ``GridSample3D`` op (only the prebuilt warp engine needs it).
PLUGIN_LIBRARY = "ditto_onnx/libgrid_sample_3d_plugin.so"
PREBUILT_ENGINE_DIR = "ditto_trt_Ampere_Plus"


@dataclass(frozen=True)
class Binding:
    """One named input or output tensor. A string dimension is dynamic (its range lives in ``NetworkSpec``)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class OnnxSource:
    """An ONNX file and how its tensors map onto the network's bindings.

    ``inputs`` / ``outputs`` give, in binding order, the file's own tensor names (``str``) or output positions
    (``int``); ``None`` means the file already uses the binding names. ``fixup`` names an in-memory repair
    applied before the session is created.
    """

    path: str
    inputs: tuple[str, ...] | None = None
    outputs: tuple[str | int, ...] | None = None
    fixup: Literal["gridsample_opset20"] | None = None


@dataclass(frozen=True)
class NetworkSpec:
    """Everything the engine layer needs to know about one network."""

    name: str
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]
    #: Precision of the TensorRT engine and of CUDA autocast in the PyTorch backend.
    precision: Precision
    #: ``module:Class`` of our ``nn.Module``; ``None`` for the auxiliary models that only exist as ONNX.
    module: str | None = None
    checkpoint: str | None = None
    container_key: str | None = None
    #: Attribute of the module that the checkpoint loads into (the LMDM file holds only the denoiser).
    weights_attr: str | None = None
    #: ONNX files ONNX Runtime may run, most preferred first.
    onnx: tuple[OnnxSource, ...] = ()
    #: ``True``: TensorRT engines are built from our own (plugin-free) export of the module, not from ``onnx``.
    trt_from_module: bool = False
    #: The released engine (TensorRT 8.6) and whether it needs the GridSample3D plugin to deserialise.
    prebuilt_engine: str | None = None
    needs_plugin: bool = False
    #: Dynamic dimension name -> (min, opt, max), for TensorRT optimisation profiles and input checks.
    dynamic: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.outputs)

    @property
    def engine_file(self) -> str:
        """File name of a TensorRT engine for this network, e.g. ``decoder_fp16.engine``."""
        stem = self.checkpoint.rsplit("/", 1)[-1].removesuffix(".pth") if self.checkpoint else self.name
        return f"{stem}_{self.precision}.engine"


def _f32(name: str, *shape: int | str) -> Binding:
    return Binding(name, tuple(shape))


_KP = (1, 21, 3)
_MODELS = "ditto_pytorch/models"
_AUX = "ditto_pytorch/aux_models"

_SPECS: tuple[NetworkSpec, ...] = (
    NetworkSpec(
        name="appearance_extractor",
        inputs=(_f32("image", 1, 3, 256, 256),),
        outputs=(_f32("pred", 1, 32, 16, 64, 64),),
        precision="fp16",
        module="ditto_demo.models.appearance_extractor:AppearanceFeatureExtractor",
        checkpoint=f"{_MODELS}/appearance_extractor.pth",
        onnx=(OnnxSource("ditto_onnx/appearance_extractor.onnx"),),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/appearance_extractor_fp16.engine",
    ),
    NetworkSpec(
        name="motion_extractor",
        inputs=(_f32("image", 1, 3, 256, 256),),
        outputs=(
            _f32("pitch", 1, 66),
            _f32("yaw", 1, 66),
            _f32("roll", 1, 66),
            _f32("t", 1, 3),
            _f32("exp", 1, 63),
            _f32("scale", 1, 1),
            _f32("kp", 1, 63),
        ),
        precision="fp32",
        module="ditto_demo.models.motion_extractor:MotionExtractor",
        checkpoint=f"{_MODELS}/motion_extractor.pth",
        onnx=(OnnxSource("ditto_onnx/motion_extractor.onnx"),),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/motion_extractor_fp32.engine",
    ),
    NetworkSpec(
        name="warp_network",
        inputs=(_f32("feature_3d", 1, 32, 16, 64, 64), _f32("kp_source", *_KP), _f32("kp_driving", *_KP)),
        outputs=(_f32("out", 1, 256, 64, 64),),
        precision="fp16",
        module="ditto_demo.models.warp_network:WarpingNetwork",
        checkpoint=f"{_MODELS}/warp_network.pth",
        # warp_network.onnx holds the custom GridSample3D op, which ONNX Runtime cannot run; the "_ori" export
        # uses the standard op but declares opset 17, too old for 5-D GridSample, hence the fix-up.
        onnx=(OnnxSource("ditto_onnx/warp_network_ori.onnx", fixup="gridsample_opset20"),),
        trt_from_module=True,
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/warp_network_fp16.engine",
        needs_plugin=True,
    ),
    NetworkSpec(
        name="decoder",
        inputs=(_f32("feature", 1, 256, 64, 64),),
        outputs=(_f32("output", 1, 3, 512, 512),),
        precision="fp16",
        module="ditto_demo.models.spade_decoder:SPADEDecoder",
        checkpoint=f"{_MODELS}/decoder.pth",
        onnx=(OnnxSource("ditto_onnx/decoder.onnx"),),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/decoder_fp16.engine",
    ),
    NetworkSpec(
        name="stitch_network",
        inputs=(_f32("kp_source", *_KP), _f32("kp_driving", *_KP)),
        outputs=(_f32("out", *_KP),),
        precision="fp16",
        module="ditto_demo.models.stitch_network:StitchingNetwork",
        checkpoint=f"{_MODELS}/stitch_network.pth",
        container_key="retarget_shoulder",
        onnx=(OnnxSource("ditto_onnx/stitch_network.onnx"),),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/stitch_network_fp16.engine",
    ),
    NetworkSpec(
        name="lmdm",
        inputs=(
            _f32("x", 1, 80, 265),
            _f32("cond_frame", 1, 265),
            _f32("cond", 1, 80, 1103),
            Binding("time_cond", (1,), "int64"),
        ),
        outputs=(_f32("pred_noise", 1, 80, 265), _f32("x_start", 1, 80, 265)),
        precision="fp32",
        module="ditto_demo.models.lmdm_step:LMDMStep",
        checkpoint=f"{_MODELS}/lmdm_v0.4_hubert.pth",
        container_key="model_state_dict",
        weights_attr="denoiser",
        onnx=(OnnxSource("ditto_onnx/lmdm_v0.4_hubert.onnx"),),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/lmdm_v0.4_hubert_fp32.engine",
    ),
    # Auxiliary models: ONNX only (the PyTorch checkpoint set runs them through ONNX Runtime as well).
    NetworkSpec(
        name="hubert",
        inputs=(_f32("input_values", 1, "samples"),),
        outputs=(_f32("encoding_out", "frames", 1024),),
        precision="fp32",
        onnx=(
            OnnxSource("ditto_onnx/hubert.onnx"),
            OnnxSource(f"{_AUX}/hubert_streaming_fix_kv.onnx", inputs=("input_values",), outputs=(0,)),
        ),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/hubert_fp32.engine",
        dynamic={"samples": (3240, 6480, 12960)},
    ),
    NetworkSpec(
        name="insightface_det",
        inputs=(_f32("image", 1, 3, 512, 512),),
        outputs=(
            _f32("scores1", 8192, 1),
            _f32("scores2", 2048, 1),
            _f32("scores3", 512, 1),
            _f32("boxes1", 8192, 4),
            _f32("boxes2", 2048, 4),
            _f32("boxes3", 512, 4),
            _f32("kps1", 8192, 10),
            _f32("kps2", 2048, 10),
            _f32("kps3", 512, 10),
        ),
        precision="fp16",
        onnx=(
            OnnxSource("ditto_onnx/insightface_det.onnx"),
            # The original insightface SCRFD file: input "input.1", nine outputs in the same order.
            OnnxSource(f"{_AUX}/det_10g.onnx", inputs=("input.1",), outputs=tuple(range(9))),
        ),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/insightface_det_fp16.engine",
    ),
    NetworkSpec(
        name="landmark106",
        inputs=(_f32("data", 1, 3, 192, 192),),
        outputs=(_f32("fc1", 1, 212),),
        precision="fp16",
        onnx=(OnnxSource("ditto_onnx/landmark106.onnx"), OnnxSource(f"{_AUX}/2d106det.onnx")),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/landmark106_fp16.engine",
    ),
    NetworkSpec(
        name="landmark203",
        inputs=(_f32("input", 1, 3, 224, 224),),
        outputs=(_f32("landmarks", 1, 406),),
        precision="fp16",
        onnx=(
            OnnxSource("ditto_onnx/landmark203.onnx"),
            # LivePortrait's original file has three outputs; the landmarks are the third.
            OnnxSource(f"{_AUX}/landmark203.onnx", outputs=(2,)),
        ),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/landmark203_fp16.engine",
    ),
    NetworkSpec(
        name="blaze_face",
        inputs=(_f32("input", 1, 128, 128, 3),),
        outputs=(_f32("regressors", 1, 896, 16), _f32("classificators", 1, 896, 1)),
        precision="fp16",
        onnx=(OnnxSource("ditto_onnx/blaze_face.onnx"),),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/blaze_face_fp16.engine",
    ),
    NetworkSpec(
        name="face_mesh",
        inputs=(_f32("input", 1, 256, 256, 3),),
        # The file has two more outputs (face flag, iris refinement) that Ditto never reads.
        outputs=(_f32("Identity", 1, 1, 1, 1434),),
        precision="fp16",
        onnx=(OnnxSource("ditto_onnx/face_mesh.onnx"),),
        prebuilt_engine=f"{PREBUILT_ENGINE_DIR}/face_mesh_fp16.engine",
    ),
)

NETWORKS: dict[str, NetworkSpec] = {spec.name: spec for spec in _SPECS}
#: The six networks we implement as PyTorch modules.
CORE_NETWORKS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.module is not None)
#: Networks that exist only as ONNX / TensorRT (plus the composite ``landmark478``).
AUX_NETWORKS: tuple[str, ...] = (*(s.name for s in _SPECS if s.module is None), "landmark478")


def get_spec(name: str) -> NetworkSpec:
    """The spec of ``name``, or a ``ValueError`` listing the valid names."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}") from None
