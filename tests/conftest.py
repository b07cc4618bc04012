"""Suite-wide settings and fixtures: no network, an isolated Hugging Face cache, the reference checkpoints."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# huggingface_hub reads these when it is imported, so they are set before any test module imports it. The cache
# is a fresh folder: tests build real Hub cache layouts there, and the user's own cache is never touched.
_HF_CACHE = Path(tempfile.mkdtemp(prefix="ditto-test-hf-"))
os.environ["HF_HUB_CACHE"] = str(_HF_CACHE / "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("DITTO_CHECKPOINTS", None)
os.environ.pop("DITTO_HUB_REVISION", None)
# numpy's BLAS threads fight torch's for the two CPU cores of a CI machine (the kit's SVDs ran 6x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def hf_cache() -> Path:
    """The isolated ``HF_HUB_CACHE`` folder of this test session."""
    return Path(os.environ["HF_HUB_CACHE"])


@pytest.fixture(scope="session")
def seed0_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint root with only ``ditto_pytorch/models/*.pth``: the seed-0 conformance weights, released layout."""
    from reference_kit import write_seed0_checkpoints

    return write_seed0_checkpoints(tmp_path_factory.mktemp("seed0"))


@pytest.fixture(autouse=True)
def _engines_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports and engines built by tests go to a per-session folder, never to the checkout's ``engines/``."""
    monkeypatch.setenv("DITTO_ENGINES_DIR", str(tmp_path_factory.getbasetemp() / "engines"))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete tiny test checkpoint root (random weights, stand-in aux models, cfg pickles): CPU-fast."""
    from ditto_demo.testing.checkpoints import write_test_checkpoints

    return write_test_checkpoints(tmp_path_factory.mktemp("tiny"), "tiny", seed=0)
