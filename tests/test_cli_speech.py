"""``python -m ditto_demo speak`` and ``generate --text``: a real WAV and a real video from typed text, offline, and
the one-line / exit-2 rule for every bad input, with nothing half-written left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import pytest

from ditto_demo.cli import main

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PORTRAIT = ASSETS / "portrait_illustration.png"

#: Run before ``python -m ditto_demo``: every way out to the network raises and is written to a log file.
_NO_NETWORK = textwrap.dedent("""
    import runpy, socket, sys
    log = open(sys.argv.pop(1), "a")
    armed = False  # the guard's own check below is not logged

    def refuse(*args, **kwargs):
        if armed:
            log.write(repr(args[:2]) + "\\n")
            log.flush()
        raise OSError("network access blocked by the test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.socket.sendto = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    try:
        socket.create_connection(("127.0.0.1", 9))
    except OSError:
        pass
    else:
        raise SystemExit("the network guard is not working")
    armed = True
    sys.argv[0] = "ditto_demo"
    runpy.run_module("ditto_demo", run_name="__main__", alter_sys=True)
""")


def _cli(*args: str, guard_log: Path | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["-c", _NO_NETWORK, str(guard_log)] if guard_log else ["-m", "ditto_demo"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DITTO_TTS_MODEL", None)
    return subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True, env=env, check=False,
                          timeout=600)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """``main(args)`` in this process (cheaper than a new interpreter): its exit status and its stderr lines."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors exit through our parser's one-line exit
        code = int(exc.code or 0)
    return code, capsys.readouterr().err.strip().splitlines()


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        return wav.getnframes() / wav.getframerate()


def test_speak_writes_a_wav_offline(tmp_path: Path) -> None:
    guard_log = tmp_path / "network.log"
    out = tmp_path / "speech.wav"
    result = _cli("speak", "--text", "Hello there, this is a test.", "--output", str(out), guard_log=guard_log)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert 1.0 < _wav_seconds(out) < 4.0
    assert guard_log.read_text() == ""  # the guard ran (it creates the log) and nothing tried the network
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "network.log") == ["speech.wav"]

    again = tmp_path / "again.wav"
    assert _cli("speak", "--text", "Hello there, this is a test.", "--output", str(again)).returncode == 0
    assert again.read_bytes() == out.read_bytes()  # the same text gives the same speech
    other = tmp_path / "other.wav"
    assert _cli("speak", "--text", "Hello there, this is a test.", "--output", str(other), "--seed", "3"
                ).returncode == 0
    assert other.read_bytes() != out.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", "   "], "Type the text to speak first"),
        (["--text", "word " * 200], "at most 600"),
        (["--text", "?!"], "no words to speak"),
        (["--text", "Hello.", "--output", "OUT/speech.mp3"], "must be a .wav file"),
        (["--text", "Hello.", "--output", "/proc/ditto/speech.wav"], "choose a writable output folder"),
        (["--output", "OUT/speech.wav"], "the following arguments are required: --text"),
    ],
)
def test_speak_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str],
                                           message: str) -> None:
    if "--output" not in args:
        args = [*args, "--output", str(tmp_path / "speech.wav")]
    code, lines = _main(capsys, "speak", *[a.replace("OUT", str(tmp_path)) for a in args])
    assert code == 2
    assert len(lines) == 1, lines
    assert message.lower() in lines[0].lower()
    assert list(tmp_path.iterdir()) == []


def _ffprobe(path: Path) -> dict:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is installed with ffmpeg (packages.txt)"
    done = subprocess.run([ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_generate_from_text(tiny_root: Path, tmp_path: Path) -> None:
    text = "Hi there."
    speech = tmp_path / "speech.wav"
    assert _cli("speak", "--text", text, "--output", str(speech)).returncode == 0
    out = tmp_path / "video.mp4"
    guard_log = tmp_path / "network.log"
    result = _cli("generate", "--checkpoints", str(tiny_root), "--source", str(PORTRAIT), "--text", text,
                  "--output", str(out), "--steps", "2", "--seed", "4", guard_log=guard_log)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "seed 4" in result.stderr
    assert guard_log.read_text() == ""
    info = _ffprobe(out)
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    assert abs(float(info["format"]["duration"]) - _wav_seconds(speech)) < 0.08  # the video speaks that text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "network.log") == ["speech.wav", "video.mp4"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", ""], "Type the text to speak first"),
        (["--text", "word " * 200], "at most 600"),
        (["--text", "Hello.", "--audio", str(ASSETS / "speech_en.wav")], "not allowed with argument"),
        ([], "one of the arguments --audio --text is required"),
        (["--text", "Hello.", "--source", "nowhere.png"], "does not exist"),
    ],
)
def test_generate_text_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tiny_root: Path,
                                                    tmp_path: Path, args: list[str], message: str) -> None:
    base = {"--source": str(PORTRAIT), "--output": str(tmp_path / "o.mp4")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[flag] = value
    extra = [x for flag, value in zip(args[::2], args[1::2], strict=True) if flag not in base for x in (flag, value)]
    code, lines = _main(capsys, "generate", "--checkpoints", str(tiny_root), "--steps", "2",
                        *[x for kv in base.items() for x in kv], *extra)
    assert code == 2
    assert len(lines) == 1, lines
    assert message.lower() in lines[0].lower()
    assert list(tmp_path.iterdir()) == []
