"""The engine layer: weight-compatible Ditto networks on TensorRT, ONNX Runtime or PyTorch.

``load_network(name, root, backend, device)`` is the whole public surface; everything above this package calls
networks through :class:`Network` and never branches on the backend.
"""

from ditto_demo.engine.backends.base import Network
from ditto_demo.engine.download import CheckpointDownload, DownloadProgress
from ditto_demo.engine.host import release_memory
from ditto_demo.engine.loader import BACKENDS, DEVICES, choose_backend, load_network
from ditto_demo.engine.specs import AUX_NETWORKS, CORE_NETWORKS, NETWORKS, get_spec

__all__ = [
    "AUX_NETWORKS",
    "BACKENDS",
    "CORE_NETWORKS",
    "DEVICES",
    "NETWORKS",
    "CheckpointDownload",
    "DownloadProgress",
    "Network",
    "choose_backend",
    "get_spec",
    "load_network",
    "release_memory",
]
