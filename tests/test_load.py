"""A bounded load test against the launched app: 8 gradio_client users × 3 requests, tiny checkpoints.

Every user gets their own correct video (frame counts follow each user's own audio length), the queue reports
positions while requests wait, every request lands in its own folder, and no temporary file is left behind.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
from app_support import launched_app
from gradio_client import Client, handle_file

ASSETS = Path(__file__).resolve().parents[1] / "assets"
USERS = 8
REQUESTS_PER_USER = 3


@pytest.mark.slow
def test_eight_users_three_requests_each(tiny_root: Path, tmp_path: Path) -> None:
    clips = {}
    for user in range(USERS):
        seconds = 0.2 + 0.04 * user  # a different length per user: 5, 6, 7, ... frames
        clips[user] = tmp_path / f"user{user}.wav"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(ASSETS / "speech_en.wav"),
                        "-t", f"{seconds:.2f}", str(clips[user])], check=True)
    expected_frames = {user: round((0.2 + 0.04 * user) * 25) for user in range(USERS)}
    results: dict[tuple[int, int], dict] = {}
    ranks: list[int] = []
    errors: list[BaseException] = []

    with launched_app(tiny_root, tmp_path, {"DITTO_CONCURRENCY": "1", "DITTO_MAX_QUEUE": "32"}) as url:

        def user_session(user: int) -> None:
            try:
                client = Client(url, verbose=False, download_files=str(tmp_path / f"downloads{user}"))
                for request in range(REQUESTS_PER_USER):
                    job = client.submit(source=handle_file(str(ASSETS / "portrait_illustration.png")),
                                        audio=handle_file(str(clips[user])), steps=10, seed=user,
                                        api_name="/generate")
                    while not job.done():
                        status = job.status()
                        if status.rank is not None and status.rank > 0:
                            ranks.append(status.rank)
                        time.sleep(0.05)
                    video, report, _settings = job.result()
                    results[(user, request)] = {"video": video, "frames": report["frames"]}
            except BaseException as exc:  # re-raised by the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=user_session, args=(u,)) for u in range(USERS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=900)
        elapsed = time.monotonic() - started

    assert not errors, errors
    assert len(results) == USERS * REQUESTS_PER_USER
    for (user, _request), result in results.items():
        assert result["frames"] == expected_frames[user]
    assert ranks, "requests waited in the queue but no position was ever reported"
    folders = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    assert len(folders) == USERS * REQUESTS_PER_USER  # one folder per request
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == ["ditto-settings.json", "ditto.mp4"]
    leftovers = [p for p in (tmp_path / "outputs").rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    assert leftovers == []
    assert elapsed < 900
