"""The always-on avatar's clock, speech, microphone and catch-up logic, on a stand-in pipeline (no networks).

The stand-in "renders" one tiny frame per 640 fed samples, in the order fed, so what is checked is the avatar itself:
real-time pacing, timestamps, the voice sent back being exactly the audio fed, interrupts, onsets, skips. The real
pipeline is exercised through the WebSocket in test_live_server.py.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ditto_demo.errors import DittoError
from ditto_demo.live.avatar import Avatar, AvatarFrame, AvatarOptions
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.live_controls import LiveControls
from ditto_demo.pipeline.pipeline import StreamFrame
from ditto_demo.pipeline.runner import CancelledError

SR = 16000
SPF = 640


class StandInPipeline:
    """Frames as the audio comes: frame k once samples [640k, 640k + 640) were fed. ``stall`` sleeps once."""

    def __init__(self, stall_at: int | None = None, stall_s: float = 0.0, per_frame_s: float = 0.0) -> None:
        self.stall_at, self.stall_s, self.per_frame_s = stall_at, stall_s, per_frame_s
        self.fed: list[np.ndarray] = []
        self.asked: list[int] = []

    def prepare_stream(self, source: Any, controls: Any = None) -> None:
        return None

    def stream(self, source: Any, audio_chunks: Iterable[np.ndarray], controls: Controls | None = None, *,
               cancel: threading.Event | None = None, live: LiveControls | None = None,
               skip_frame: Callable[[int], bool] | None = None) -> Iterator[StreamFrame]:
        total, index = 0, 0
        for chunk in audio_chunks:
            self.fed.append(np.array(chunk))
            total += chunk.size
            while total >= (index + 1) * SPF:
                if self.stall_at is not None and index == self.stall_at:
                    time.sleep(self.stall_s)
                self.asked.append(index)
                if skip_frame is None or not skip_frame(index):
                    time.sleep(self.per_frame_s)
                    yield StreamFrame(index, index / 25, np.zeros((4, 4, 3), np.uint8), time.perf_counter())
                index += 1
            if cancel is not None and cancel.is_set():
                break
        raise CancelledError("stopped")


class ClipPipeline(StandInPipeline):
    """Frames in clips of ``clip`` that are admitted together (as the low-latency motion stage hands the stitch
    thread five frames at once), rendered one after another by a render thread that takes ``per_frame_s`` each."""

    def __init__(self, per_frame_s: float, clip: int = 5) -> None:
        super().__init__(per_frame_s=per_frame_s)
        self.clip = clip

    def stream(self, source: Any, audio_chunks: Iterable[np.ndarray], controls: Controls | None = None, *,
               cancel: threading.Event | None = None, live: LiveControls | None = None,
               skip_frame: Callable[[int], bool] | None = None) -> Iterator[StreamFrame]:
        admitted: queue.Queue[int | None] = queue.Queue()
        out: queue.Queue[StreamFrame | None] = queue.Queue()

        def admit() -> None:
            total, index = 0, 0
            for chunk in audio_chunks:
                total += chunk.size
                while total >= (index + self.clip) * SPF:
                    for k in range(index, index + self.clip):
                        self.asked.append(k)
                        if skip_frame is None or not skip_frame(k):
                            admitted.put(k)
                    index += self.clip
                if cancel is not None and cancel.is_set():
                    break
            admitted.put(None)

        def render() -> None:
            while (k := admitted.get()) is not None:
                time.sleep(self.per_frame_s)
                out.put(StreamFrame(k, k / 25, np.zeros((4, 4, 3), np.uint8), time.perf_counter()))
            out.put(None)

        threads = [threading.Thread(target=admit, daemon=True), threading.Thread(target=render, daemon=True)]
        for thread in threads:
            thread.start()
        while (frame := out.get()) is not None:
            yield frame
        for thread in threads:
            thread.join()
        raise CancelledError("stopped")


class Recorder:
    def __init__(self) -> None:
        self.frames: list[AvatarFrame] = []
        self.audio: list[tuple[float, np.ndarray]] = []
        self.events: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self.error: DittoError | None = None

    def on_frame(self, frame: AvatarFrame) -> None:
        self.frames.append(frame)

    def on_audio(self, media_time: float, samples: np.ndarray) -> None:
        self.audio.append((media_time, samples.copy()))

    def on_event(self, message: dict[str, Any]) -> None:
        self.events.append(message)

    def on_end(self, error: DittoError | None) -> None:
        self.error = error
        self.ended.set()

    def states(self) -> list[str]:
        return [e["state"] for e in self.events if e["type"] == "state"]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)


class StandInVoice:
    def sentences(self, text: str) -> list[str]:
        return [s.strip() + "." for s in text.split(".") if s.strip()]

    def synthesize(self, text: str, *, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(len(text))
        return (0.3 * rng.standard_normal(int(0.05 * SR * len(text)))).astype(np.float32)


def _avatar(pipeline: StandInPipeline, recorder: Recorder, **options: Any) -> Avatar:
    return Avatar(pipeline, Path("portrait.png"), LiveControls(), recorder, voice=StandInVoice,
                  read_speech=lambda path: np.full(SR, 0.25, np.float32), options=AvatarOptions(**options))


@pytest.fixture
def threads_checked() -> Iterator[None]:
    before = threading.active_count()
    yield
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def _speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


def test_idle_frames_follow_the_clock(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline()
    avatar = _avatar(pipeline, recorder).start()
    recorder.wait_for(lambda: len(recorder.frames) >= 30)
    now = avatar.session_time()
    avatar.stop()
    assert recorder.ended.wait(5)
    assert recorder.error is None
    assert recorder.states()[0] == "live"
    frames = recorder.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.media_time == pytest.approx(f.index / 25) for f in frames)
    assert all(f.driven_by_ms is None for f in frames)
    assert now is not None
    assert frames[29].media_time <= now
    assert not recorder.audio  # silence is never sent back
    assert all(not np.any(chunk) for chunk in pipeline.fed)


def test_speech_is_fed_and_sent_back_exactly(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline()
    avatar = _avatar(pipeline, recorder).start()
    recorder.wait_for(lambda: len(recorder.frames) >= 5)
    speech = _speech(0.7)
    avatar.play(speech, "hello")
    recorder.wait_for(lambda: "idle" in recorder.states())
    avatar.stop()
    speaking = next(e for e in recorder.events if e.get("state") == "speaking")
    idle = next(e for e in recorder.events if e.get("state") == "idle")
    assert speaking["text"] == "hello"
    assert idle["message"] == "done"
    sent = np.concatenate([a for _, a in recorder.audio])
    np.testing.assert_array_equal(sent, speech)  # exactly the audio fed to the model ...
    fed = np.concatenate(pipeline.fed)
    start = round(speaking["media_time"] * SR)
    np.testing.assert_array_equal(fed[start:start + speech.size], speech)  # ... at the media time it says
    times = [t for t, _ in recorder.audio]
    assert times[0] == pytest.approx(speaking["media_time"])
    for (t, a), t_next in zip(recorder.audio, times[1:], strict=False):
        assert t_next == pytest.approx(t + a.size / SR)  # contiguous
    assert idle["media_time"] == pytest.approx(speaking["media_time"] + speech.size / SR)
    onsets = [e for e in recorder.events if e["type"] == "speech_onset"]
    assert onsets
    assert abs(onsets[0]["media_time"] - speaking["media_time"]) <= 0.02


def test_text_is_spoken_sentence_by_sentence_and_queued(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline()
    avatar = _avatar(pipeline, recorder).start()
    avatar.speak("Zero, one. Two three.")
    avatar.speak("Four.")  # queued while the first text speaks
    recorder.wait_for(lambda: recorder.states().count("idle") >= 1 and not avatar.stats()["queued_speech_s"], 15)
    avatar.stop()
    voice = StandInVoice()
    gap = np.zeros(round(0.2 * SR), np.float32)
    # The first sentence's first clause is synthesized (and fed) ahead of the rest of it.
    spoken = [voice.synthesize("Zero,"), voice.synthesize("one."), gap, voice.synthesize("Two three."),
              voice.synthesize("Four.")]
    expected = np.concatenate(spoken)
    np.testing.assert_array_equal(np.concatenate([a for _, a in recorder.audio]), expected)
    texts = [e["text"] for e in recorder.events if e.get("state") == "speaking"]
    assert texts == ["Zero,", "Four."]  # one speaking state per utterance, no idle in between


def test_interrupt_drops_unfed_speech_at_once(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline()
    avatar = _avatar(pipeline, recorder).start()
    avatar.play(_speech(3.0))
    avatar.speak("Queued. Text.")
    recorder.wait_for(lambda: "speaking" in recorder.states())
    time.sleep(0.3)
    asked = avatar.session_time()
    cut = avatar.interrupt()
    time.sleep(0.3)
    avatar.stop()
    assert cut is not None
    assert asked is not None
    assert cut - asked <= 0.2
    assert recorder.states()[-1] == "idle"
    assert [e for e in recorder.events if e.get("state") == "idle"][-1]["message"] == "interrupted"
    last_t, last_a = recorder.audio[-1]
    assert last_t + last_a.size / SR <= cut + 1e-9  # nothing of the utterance after the cut
    assert sum(a.size for _, a in recorder.audio) < 3.0 * SR
    assert avatar.stats()["queued_speech_s"] == 0


def test_microphone_onset_and_driven_frames(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline()
    avatar = _avatar(pipeline, recorder).start()
    recorder.wait_for(lambda: avatar.session_time() is not None)
    packets = np.concatenate([np.zeros(int(0.5 * SR), np.float32), _speech(0.6)])
    base = 10_000.0
    started = time.monotonic()
    for number, start in enumerate(range(0, packets.size, 320)):
        target = started + number * 0.02
        time.sleep(max(0.0, target - time.monotonic()))
        avatar.push_mic(packets[start:start + 320], base + 20.0 * number)
    time.sleep(0.3)
    avatar.stop()
    onsets = [e for e in recorder.events if e["type"] == "speech_onset"]
    assert len(onsets) == 1
    assert onsets[0]["client_time_ms"] == pytest.approx(base + 500.0, abs=1e-6)
    driven = [f for f in recorder.frames if f.driven_by_ms is not None]
    assert driven, "frames fed by the microphone must say so"
    assert all(base <= f.driven_by_ms < base + 1100.0 for f in driven)
    speaking = [f for f in driven if f.driven_by_ms >= base + 500.0]
    assert speaking, "frames driven by the speech itself"
    assert not recorder.audio  # the microphone is never sent back
    assert avatar.stats()["dropped_audio_ms"] == 0


def test_microphone_backlog_is_dropped_oldest_first(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline()
    avatar = _avatar(pipeline, recorder, max_mic_buffer_s=0.1).start()
    avatar.push_mic(np.full(SR // 2, 0.1, np.float32), 0.0)  # half a second in one burst, before the clock starts
    recorder.wait_for(lambda: len(recorder.frames) >= 10)
    avatar.stop()
    assert avatar.stats()["dropped_audio_ms"] == pytest.approx(400.0)
    assert next(f.driven_by_ms for f in recorder.frames if f.driven_by_ms is not None) == pytest.approx(400.0)


def test_a_stalled_pipeline_skips_whole_frames_and_counts_dropped_speech(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline(stall_at=5, stall_s=1.2)
    avatar = _avatar(pipeline, recorder).start()
    avatar.play(_speech(3.0))
    recorder.wait_for(lambda: len(recorder.frames) >= 25)
    now = avatar.session_time()
    avatar.stop()
    stats = avatar.stats()
    assert stats["dropped_audio_ms"] >= 500.0  # speech that should have been said during the stall
    frames = recorder.frames
    jumps = [b.media_time - a.media_time for a, b in itertools.pairwise(frames)]
    assert max(jumps) >= 0.5
    assert all(j > 0 for j in jumps)
    assert all(round(f.media_time * 25, 6).is_integer() for f in frames)  # whole frames
    assert now is not None
    assert now - frames[-1].media_time < 0.5
    sent = sum(a.size for _, a in recorder.audio) / SR
    assert sent + stats["dropped_audio_ms"] / 1000 + stats["queued_speech_s"] == pytest.approx(3.0, abs=0.05)


def test_late_frames_are_not_rendered(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline(per_frame_s=0.08)  # half real time
    avatar = _avatar(pipeline, recorder, max_delay_s=0.3, max_backlog_s=5.0).start()
    time.sleep(2.5)
    now = avatar.session_time()
    avatar.stop()
    assert now is not None
    assert len(pipeline.asked) > len(recorder.frames)  # some were dropped before rendering ...
    assert avatar.stats()["dropped_frames"] > 0
    assert now - recorder.frames[-1].media_time < 0.3 + 0.25  # ... so the delay stays bounded


def test_a_renderer_that_keeps_up_renders_every_frame_of_a_clip(threads_checked: None) -> None:
    """Five frames arrive at once; a renderer at twice real time finishes them before the next clip, so none is
    dropped (admission counted frames in flight once, and dropped two of every five)."""
    recorder, pipeline = Recorder(), ClipPipeline(per_frame_s=0.02)
    avatar = _avatar(pipeline, recorder).start()
    time.sleep(3.0)
    avatar.stop()
    assert len(pipeline.asked) >= 50
    assert avatar.stats()["dropped_frames"] <= 0.05 * len(pipeline.asked)
    assert len(recorder.frames) >= 0.9 * len(pipeline.asked)


def test_the_avatar_recovers_when_a_slow_renderer_speeds_up(threads_checked: None) -> None:
    """A slow spell (a shared GPU, a busy CPU) must not throttle the avatar for good: the pace estimate keeps
    learning, so every frame is rendered again once the renderer is fast."""
    recorder, pipeline = Recorder(), ClipPipeline(per_frame_s=0.5)  # a fifth of real time: the pace is learnt
    avatar = _avatar(pipeline, recorder, max_delay_s=5.0, max_backlog_s=10.0).start()
    time.sleep(4.0)
    pipeline.per_frame_s = 0.02
    time.sleep(2.0)
    asked_from, out_from = len(pipeline.asked), len(recorder.frames)
    time.sleep(2.0)
    asked, out = len(pipeline.asked) - asked_from, len(recorder.frames) - out_from
    avatar.stop()
    assert asked >= 40
    assert out >= 0.85 * asked, (out, asked)


def test_a_renderer_slower_than_real_time_drops_clip_frames_and_stays_in_time(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), ClipPipeline(per_frame_s=0.08)  # half real time
    avatar = _avatar(pipeline, recorder, max_delay_s=0.5, max_backlog_s=5.0).start()
    time.sleep(3.0)
    now = avatar.session_time()
    avatar.stop()
    assert now is not None
    assert avatar.stats()["dropped_frames"] > 0.2 * len(pipeline.asked)
    # Frames come out at most max_delay_s + max_queue_s (+ one frame's render) after their audio.
    lateness = [f.ready_at - f.media_time for f in recorder.frames]
    assert max(lateness) < 0.5 + 0.25 + 0.08 + 0.1
    assert now - recorder.frames[-1].media_time < 0.5 + 0.4


def test_errors_end_the_avatar_with_a_sentence(threads_checked: None) -> None:
    class Failing(StandInPipeline):
        def prepare_stream(self, source: Any, controls: Any = None) -> None:
            raise DittoError("No face was found in the portrait.")

    recorder = Recorder()
    avatar = _avatar(Failing(), recorder).start()
    assert recorder.ended.wait(5)
    assert str(recorder.error) == "No face was found in the portrait."
    assert avatar.ended
    assert not avatar.push_mic(np.zeros(320, np.float32), 0.0)
    avatar.stop()


def test_speech_errors_do_not_end_the_session(threads_checked: None) -> None:
    recorder, pipeline = Recorder(), StandInPipeline()
    avatar = Avatar(pipeline, Path("p.png"), LiveControls(), recorder).start()  # no voice, no file reader
    avatar.speak("Hello.")
    avatar.play_file("speech.wav")
    recorder.wait_for(lambda: len([e for e in recorder.events if e["type"] == "error"]) == 2)
    assert all(not e["fatal"] for e in recorder.events if e["type"] == "error")
    assert not avatar.ended
    avatar.stop()
