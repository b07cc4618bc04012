"""Command line: ``python -m ditto_demo <command>``.

Every command reports a user error (:class:`DittoError`, bad arguments) as one line on stderr and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from ditto_demo.errors import CheckpointError, DittoError, InputError

if TYPE_CHECKING:
    from ditto_demo.pipeline.controls import Controls

__all__ = ["main"]

log = logging.getLogger("ditto_demo")

EXIT_USAGE = 2
#: ``ditto_demo.testing.checkpoints.TEST_SIZES``, restated so that parsing the command line does not import torch
#: (tests/test_cli.py checks the two agree).
TEST_SIZES = ("micro", "tiny", "full")


class _Parser(argparse.ArgumentParser):
    """argparse that exits with status 2 and a single line, like every other user error here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _bench(args: argparse.Namespace) -> int:
    import json

    from ditto_demo.bench import DEFAULT_PORTRAIT, BenchOptions, format_table, run_bench

    options = BenchOptions(
        backend=args.backend,
        device=args.device,
        size=args.size,
        runs=args.runs,
        warmup=args.warmup,
        audio_seconds=args.audio_seconds,
        steps=args.steps,
        checkpoints=Path(args.checkpoints) if args.checkpoints else None,
        portrait=Path(args.portrait) if args.portrait else DEFAULT_PORTRAIT,
        paced=args.paced,
        parts=tuple(args.parts),
        threads=args.threads,
        streams=args.streams,
        compile=args.compile,
    )
    if args.workers is not None:  # worker scaling (issue 13): 1 worker against N, videos per minute
        from ditto_demo.bench.parts.workers import bench_workers, format_workers_table

        results = bench_workers(options, args.workers)
        table = format_workers_table
    else:
        results = run_bench(options)
        table = format_table
    if not args.json:
        print(table(results))
    print(json.dumps(results, sort_keys=True))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from ditto_demo.engine.report import engine_report
    from ditto_demo.workers import PoolSettings, describe_plan

    workers = describe_plan(PoolSettings.from_env(app_device=os.environ.get("DITTO_DEVICE", "auto")))
    print(engine_report(Path(args.checkpoints) if args.checkpoints else None, workers=workers))
    return 0


def _download(args: argparse.Namespace) -> int:
    from ditto_demo.engine.hub import resolve_checkpoints

    root = resolve_checkpoints(args.backend, prebuilt_engines=args.prebuilt_engines, force=args.force)
    print(root)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ditto_demo.engine.hub import resolve_checkpoints, verify_checkpoints
    from ditto_demo.engine.integrity import repair_command

    root = resolve_checkpoints(args.backend, local=args.checkpoints)
    problems = verify_checkpoints(root, args.backend)
    if problems:
        listed = "; ".join(f"{name} {problem}" for name, problem in problems.items())
        raise CheckpointError(f"{len(problems)} checkpoint file(s) are damaged: {listed}; "
                              f"{repair_command(root, args.backend)}.")
    print(f"{root}: every file the {args.backend} backend needs is present and intact")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from ditto_demo.engine import CORE_NETWORKS
    from ditto_demo.engine.export import export_network
    from ditto_demo.engine.hub import resolve_checkpoints

    root = resolve_checkpoints("torch", local=args.checkpoints)
    output = Path(args.output)
    for name in args.networks or CORE_NETWORKS:
        suffix = "_plugin_free" if args.plugin_free and name == "warp_network" else ""
        path = export_network(name, root, output / f"{name}{suffix}.onnx", plugin_free=bool(suffix))
        print(path)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from ditto_demo.cli_controls import controls_from_args

    controls = controls_from_args(args)  # validate every control before loading anything
    inputs = (("--source", args.source),) + ((("--audio", args.audio),) if args.audio is not None else ())
    for label, value in inputs:
        if not Path(value).is_file():
            raise InputError(f"{label} {value} does not exist or is not a file.")
    with ExitStack() as cleanup:
        audio = args.audio
        if args.text is not None:
            # The speech lives in a temporary folder for this run only; the video carries it.
            folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ditto-speech-")))
            audio = str(_speak_text(args.text, folder / "speech.wav", tts_model=args.tts_model))
        if args.save_settings:
            Path(args.save_settings).write_text(controls.to_json() + "\n")
        return _render(args, controls, audio)


def _speak_text(text: str, output: Path, *, tts_model: str | None, seed: int = 0) -> Path:
    """Speak ``text`` into the WAV file ``output`` (checked before the voice loads)."""
    from ditto_demo.speech import check_text, load_voice, write_speech

    check_text(text)
    return write_speech(load_voice(tts_model), text, output, seed=seed)


def _speak(args: argparse.Namespace) -> int:
    print(_speak_text(args.text, Path(args.output), tts_model=args.tts_model, seed=args.seed))
    return 0


def _render(args: argparse.Namespace, controls: Controls, audio: str) -> int:
    import threading

    from tqdm import tqdm

    from ditto_demo.engine.backends.torch_backend import compile_mode_from_env
    from ditto_demo.pipeline.pipeline import Pipeline
    from ditto_demo.pipeline.writer import EncoderSettings

    pipeline = Pipeline(args.checkpoints, backend=args.backend, device=args.device,
                        compile_mode=compile_mode_from_env(), encoder=EncoderSettings.from_env())
    cancel = threading.Event()
    quiet = args.quiet or not sys.stderr.isatty()  # no bar in logs: a user error stays one line
    with tqdm(total=100, unit="%", disable=quiet, bar_format="{desc:<24}{bar}| {n:.0f}% [{elapsed}<{remaining}]",
              file=sys.stderr) as bar:

        def progress(stage: str, fraction: float, message: str) -> None:
            weights = {"audio": (0, 3), "features": (3, 5), "face": (8, 7), "motion": (15, 10), "render": (25, 72),
                       "encode": (97, 3)}
            start, span = weights.get(stage, (0, 0))
            bar.set_description_str(message[:24])
            bar.n = min(100.0, start + span * fraction)
            bar.refresh()

        try:
            result = pipeline.generate(args.source, audio, controls, output=args.output, progress=progress,
                                       cancel=cancel)
        except KeyboardInterrupt:
            cancel.set()
            print("cancelled; no output was written", file=sys.stderr)
            return 130
    timing = ", ".join(f"{k} {v:.1f} ms" for k, v in result.per_frame_ms.items())
    print(result.video)
    print(
        f"{result.frames} frames, {result.audio_seconds:.2f} s of audio in {result.total_seconds:.1f} s "
        f"(RTF {result.rtf:.2f}, first frame after {result.first_frame_latency:.2f} s); seed {result.seed}; "
        f"per frame: {timing}",
        file=sys.stderr,
    )
    return 0


def _make_test_checkpoints(args: argparse.Namespace) -> int:
    from ditto_demo.testing.checkpoints import write_test_checkpoints

    root = Path(args.dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a folder; choose another path.")
    print(write_test_checkpoints(root, args.size, args.seed))
    return 0


def _add_tts_model_flag(parser: argparse.ArgumentParser) -> None:
    from ditto_demo.speech.hub import TTS_MODEL_ENV

    parser.add_argument("--tts-model", default=os.environ.get(TTS_MODEL_ENV) or None, metavar="HUB_MODEL",
                        help=f"a Hub text-to-speech model to prefer where transformers and the Hub are reachable, "
                             f"e.g. facebook/mms-tts-eng (default: {TTS_MODEL_ENV} or none: the built-in voice)")


def _build_parser() -> argparse.ArgumentParser:
    from ditto_demo.bench import PARTS
    from ditto_demo.bench.options import ALL_PARTS
    from ditto_demo.cli_controls import add_control_flags
    from ditto_demo.engine import BACKENDS, CORE_NETWORKS, DEVICES
    from ditto_demo.engine.backends.torch_backend import COMPILE_MODES

    parser = _Parser(prog="python -m ditto_demo", description="Ditto talking-head synthesis tools.")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-v) or debug details (-vv) to stderr"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bench = sub.add_parser(
        "bench", help="measure speed and memory: RTF offline/online, first-frame delay, per-stage and per-network ms"
    )
    bench.add_argument("--backend", choices=BACKENDS, default="auto")
    bench.add_argument("--device", choices=DEVICES, default="auto")
    bench.add_argument("--size", choices=TEST_SIZES, default="tiny",
                       help="random-weight test networks: micro (live runs on a small CPU), tiny widths (smoke) or "
                            "the released sizes")
    bench.add_argument("--runs", type=int, default=5, help="measured runs; medians and p05/p95 over them")
    bench.add_argument("--warmup", type=int, default=1, help="runs done first and discarded")
    bench.add_argument("--audio-seconds", type=float,
                       help="speech length, the first 0.5 s silent (default 4 at tiny, 8 at full)")
    bench.add_argument("--steps", type=int, help="diffusion steps (default: the checkpoint's, 50 offline, 10 online)")
    bench.add_argument("--checkpoints", help="checkpoint folder (default: test checkpoints of --size in a temp folder)")
    bench.add_argument("--portrait", help="portrait image (default: assets/portrait_illustration.png)")
    bench.add_argument("--no-paced", dest="paced", action="store_false",
                       help="skip the real-time paced stream (it takes the audio's length in wall time per run)")
    bench.add_argument("--parts", nargs="+", choices=ALL_PARTS, default=list(PARTS),
                       help="what to run (default: all but live-browser; e.g. --parts networks overhead at full "
                            "size on a CPU; --parts live-browser: the Live tab in headless Chromium, each session "
                            "--audio-seconds long)")
    bench.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own setting)")
    bench.add_argument("--compile", choices=COMPILE_MODES,
                       help="overrides DITTO_TORCH_COMPILE for this run; "
                            "with 'default' the networks part is the compile lever")
    bench.add_argument("--streams", type=int, default=2,
                       help="concurrent paced live streams in the 'streams' part (default 2; the GPU target is 8)")
    bench.add_argument("--workers", type=int,
                       help="instead: throughput of 1 and N local worker processes (videos per minute, paced "
                            "streams kept up; --runs videos per worker)")
    bench.add_argument("--json", action="store_true", help="print only the JSON line, no table")
    bench.set_defaults(func=_bench)

    doctor = sub.add_parser("doctor", help="print the host, the usable backends and the checkpoint files found")
    doctor.add_argument("--checkpoints", help="checkpoint folder to inspect (default: DITTO_CHECKPOINTS or the cache)")
    doctor.set_defaults(func=_doctor)

    download = sub.add_parser("download", help="fetch the checkpoints one backend needs into the Hugging Face cache")
    download.add_argument("--backend", choices=[b for b in BACKENDS if b != "auto"], default="torch")
    download.add_argument(
        "--prebuilt-engines", action="store_true", help="also fetch the released TensorRT 8.6 engines"
    )
    download.add_argument("--force", action="store_true", help="fetch every file again (repairs damaged files)")
    download.set_defaults(func=_download)

    verify = sub.add_parser("verify", help="check the checkpoint files (sizes and sha256 against the Hub cache)")
    verify.add_argument("--backend", choices=[b for b in BACKENDS if b != "auto"], default="torch")
    verify.add_argument("--checkpoints", help="checkpoint folder (default: DITTO_CHECKPOINTS or the Hub cache)")
    verify.set_defaults(func=_verify)

    export = sub.add_parser("export-onnx", help="export our PyTorch networks to ONNX (opset 20)")
    export.add_argument("--checkpoints", help="checkpoint folder (default: DITTO_CHECKPOINTS or the Hub)")
    export.add_argument("--output", required=True, help="folder for the .onnx files")
    export.add_argument("--networks", nargs="+", choices=CORE_NETWORKS, help="default: all six")
    export.add_argument(
        "--plugin-free",
        action="store_true",
        help="write the warp network's 5-D sampling as tiled 2-D GridSample (for TensorRT without a plugin)",
    )
    export.set_defaults(func=_export_onnx)

    generate = sub.add_parser(
        "generate", help="render a talking-head video from a portrait (image or video) and speech"
    )
    generate.add_argument("--source", required=True, help="portrait: an image (jpg, png, webp, ...) or a video")
    speech = generate.add_mutually_exclusive_group(required=True)
    speech.add_argument("--audio", help="speech: any format ffmpeg reads (wav, mp3, m4a, ...)")
    speech.add_argument("--text", help="text to speak with the built-in voice instead of --audio (English)")
    _add_tts_model_flag(generate)
    generate.add_argument("--output", required=True, help="the .mp4 to write (only written when complete)")
    generate.add_argument("--checkpoints", help="checkpoint folder (default: DITTO_CHECKPOINTS or the Hub)")
    generate.add_argument("--backend", choices=BACKENDS, default="auto")
    generate.add_argument("--device", choices=DEVICES, default="auto")
    generate.add_argument("--save-settings", metavar="FILE", help="also write the controls used as JSON")
    generate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_control_flags(generate)
    generate.set_defaults(func=_generate)

    speak = sub.add_parser("speak", help="speak text into a 16 kHz WAV file with the built-in voice (offline)")
    speak.add_argument("--text", required=True, help="what to say (English)")
    speak.add_argument("--output", required=True, help="the .wav to write (only written when complete)")
    speak.add_argument("--seed", type=int, default=0,
                       help="the voice's natural variation: the same text and seed give the same speech [0]")
    _add_tts_model_flag(speak)
    speak.set_defaults(func=_speak)

    test_ckpt = sub.add_parser(
        "make-test-checkpoints",
        help="write random-weight checkpoints in the Hub layout (test data: they produce no real face)",
    )
    test_ckpt.add_argument("dir", help="folder to write (created if needed)")
    test_ckpt.add_argument("--size", choices=TEST_SIZES, default="tiny",
                           help="tiny widths, micro (tiny with a smaller feature grid, for live runs) or the "
                                "released sizes")
    test_ckpt.add_argument("--seed", type=int, default=0)
    test_ckpt.set_defaults(func=_make_test_checkpoints)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ditto_demo``; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except DittoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
