"""``python -m ditto_demo``: doctor, export-onnx, and the one-line / exit-2 rule for user errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from reference_kit import relative_error, seed0_inputs

from ditto_demo.cli import main


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ditto_demo", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=300,
    )


def test_doctor_reports_host_backends_and_files(seed0_root: Path) -> None:
    result = _run("doctor", "--checkpoints", str(seed0_root))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "torch/cpu" in out
    assert "onnx/cpu" in out
    assert "tensorrt      not usable" in out  # this CPU test machine
    assert f"checkpoints   {seed0_root} (local folder)" in out
    assert "torch       missing" in out  # the seed-0 root has only the six .pth files, no aux models
    assert "decoder               auto -> torch/cpu" in out


def test_doctor_without_checkpoints_points_at_download() -> None:
    result = _run("doctor")
    assert result.returncode == 0
    assert "none found" in result.stdout
    assert "download" in result.stdout


def test_export_onnx_writes_runnable_files(seed0_root: Path, tmp_path: Path) -> None:
    result = _run(
        "export-onnx", "--checkpoints", str(seed0_root), "--output", str(tmp_path), "--networks", "stitch_network"
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path / "stitch_network.onnx"
    assert result.stdout.strip() == str(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip(["out"], session.run(None, seed0_inputs("stitch_network")), strict=True))
    assert relative_error(outputs, "stitch_network") < 1e-3


def test_export_plugin_free_warp_matches(seed0_root: Path, tmp_path: Path) -> None:
    assert main(["export-onnx", "--checkpoints", str(seed0_root), "--output", str(tmp_path),
                 "--networks", "warp_network", "--plugin-free"]) == 0
    path = tmp_path / "warp_network_plugin_free.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, seed0_inputs("warp_network"))
    assert relative_error({"out": out}, "warp_network") < 1e-3
    assert np.isfinite(out).all()


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = _run("export-onnx", "--checkpoints", str(missing), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: The checkpoint folder")
    assert not (tmp_path / "out").exists()

    bad_flag = _run("export-onnx", "--networks", "nope", "--output", str(tmp_path))
    assert bad_flag.returncode == 2
    assert bad_flag.stderr.strip().splitlines()[-1].startswith("python -m ditto_demo export-onnx: error:")

    offline = _run("download", "--backend", "onnx")  # the test session's empty, offline Hub cache
    assert offline.returncode == 2
    assert "python -m ditto_demo download --backend onnx" in offline.stderr
    assert offline.stderr.strip().count("\n") == 0


def test_make_test_checkpoints(tmp_path: Path) -> None:
    result = _run("make-test-checkpoints", str(tmp_path / "tiny"), "--size", "tiny", "--seed", "5")
    assert result.returncode == 0, result.stderr
    root = Path(result.stdout.strip())
    assert (root / "ditto_pytorch/models/model_config.json").is_file()
    assert (root / "ditto_onnx/warp_network_ori.onnx").is_file()
    assert "produce no real face" in (root / "README.md").read_text()
    doctor = _run("doctor", "--checkpoints", str(root))
    assert "onnx        complete" in doctor.stdout
    (tmp_path / "file").write_text("x")
    clash = _run("make-test-checkpoints", str(tmp_path / "file"))
    assert clash.returncode == 2
    assert "is not a folder" in clash.stderr
