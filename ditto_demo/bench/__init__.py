"""``python -m ditto_demo bench``: speed and memory figures a user can trust, for one backend, device and size.

What is measured (perf_anchors.md §4 is the protocol this follows):

* **offline**: :meth:`Pipeline.generate` end to end: RTF (wall / audio seconds), the first frame's latency, the
  per-stage ms per frame that the runner records, and the phase timings;
* **online, burst**: :meth:`Pipeline.stream` fed 100 ms chunks as fast as it takes them: online RTF and the
  compute-only first-frame delay (audio already buffered);
* **online, paced**: the same chunks released on a real-time clock: the first frame's delay from the first chunk
  and from speech onset, and whether the stream keeps up (the lag of frame k behind its audio time); also the
  reference's streaming (``paced_reference``) and several paced streams at once (``streams``);
* **smoothness**: the streamed motion of both latency choices on the same speech and seed;
* **networks**: each network's ms per call on its binding shapes through ``load_network`` on the chosen backend,
  against the same architecture and weights called as a plain eager float32 ``nn.Module`` (no wrapper), interleaved
  call by call so that drift (thermal, other load) hits both alike;
* **overhead**: the per-frame work outside the networks (stitch maths, image conversion, paste-back, encode, queues),
  timed directly at 512 × 512 and derived from the offline stage timings; and its **levers**: before / after ms
  per frame of the device-resident render path and of the paste-back alone;
* **memory**: peak RSS per part (the kernel's high-water mark, reset between parts) and, on CUDA, the allocator peak.

Discipline: networks and the portrait are loaded and registered before anything is timed (reported as setup);
``warmup`` rounds are run and discarded; offline, burst and paced runs are interleaved round by round; every figure
is a median with p05 / p95 over ``runs``. A run that produced the wrong number of frames raises instead of
reporting a speed. Timing is ``time.perf_counter`` on the CPU; per-network calls on CUDA use CUDA events around a
synchronised call. Pipeline stage timings are the runner's wall clock per stage. On the CPU each stage's work is
done when it returns; on a GPU the warp and decode stages hand device tensors on, so their kernels may still run
after the stage returns and the wait lands in the compose stage (which copies the face box back): there, read the
render wall time and the levers rather than the split between stages.

The package, one module per concern: :mod:`.options` (what to run), :mod:`.measure` (statistics, clocks, memory,
machine facts), :mod:`.speech` (the input audio), :mod:`.parts` (what is timed), :mod:`.smoothness` (the motion
metric), :mod:`.driver` (settings at the edge, the run), :mod:`.report` (the table). No argument parsing: the CLI
maps its flags onto :class:`BenchOptions`.
"""

from ditto_demo.bench.driver import run_bench
from ditto_demo.bench.options import DEFAULT_PORTRAIT, PARTS, BenchOptions
from ditto_demo.bench.parts.overhead import OVERHEAD_BUDGET_MS
from ditto_demo.bench.report import format_table
from ditto_demo.bench.speech import bench_audio

__all__ = [
    "DEFAULT_PORTRAIT",
    "OVERHEAD_BUDGET_MS",
    "PARTS",
    "BenchOptions",
    "bench_audio",
    "format_table",
    "run_bench",
]
