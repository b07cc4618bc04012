"""cfg pickles: released structure read safely, code refused, fallbacks when absent."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.errors import CheckpointError
from ditto_demo.pipeline.config import ReleasedDefaults, load_cfg, load_defaults, safe_loads


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_arrays_and_containers_round_trip(protocol: int) -> None:
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, 2.5, "x", None], "c": (np.int64(3),),
            "d": {"nested": np.zeros((15, 63), np.float32)}, "e": {1, 2}}
    loaded = safe_loads(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(loaded["a"], data["a"])
    assert loaded["b"] == data["b"]
    assert loaded["c"][0] == 3
    assert loaded["d"]["nested"].shape == (15, 63)


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "ditto_cfg" / "v0.4_hubert_cfg_pytorch.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"default_kwargs": {"emo": _Exploit(marker)}}))
    with pytest.raises(CheckpointError, match=r"refused to load (posix|os)\.system"):
        load_cfg(path)
    with pytest.raises(CheckpointError, match="we can read safely"):
        load_defaults(tmp_path)
    assert not marker.exists()


def test_test_checkpoint_cfgs(tiny_root: Path) -> None:
    offline = load_defaults(tiny_root, "pytorch")
    online = load_defaults(tiny_root, "online")
    assert (offline.online, online.online) == (False, True)
    assert (offline.overlap, online.overlap) == (10, 70)
    assert online.fix_kp_cond_dim == (0, 202)
    assert offline.blink_template is not None
    assert offline.blink_template.shape == (15, 63)
    assert offline.overall_ctrl == {"delta_pitch": 2}
    assert offline.source.endswith("v0.4_hubert_cfg_pytorch.pkl")


def test_missing_cfg_uses_the_reference_fallbacks(seed0_root: Path, tmp_path: Path) -> None:
    assert load_defaults(seed0_root) == ReleasedDefaults()
    assert ReleasedDefaults().steps == 50
    assert ReleasedDefaults().emotion == 4
    broken = tmp_path / "ditto_cfg" / "v0.4_hubert_cfg_pytorch.pkl"
    broken.parent.mkdir()
    broken.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(CheckpointError, match="python -m ditto_demo download"):
        load_defaults(tmp_path)
    with pytest.raises(ValueError, match="variant must be"):
        load_defaults(tmp_path, "gpu")
