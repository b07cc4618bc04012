"""The time base every stage shares: 25 video frames per second over 16 kHz speech, and 1024-d HuBERT features.

None of these is a setting. The released networks fix them: the HuBERT export reads 16 kHz windows and its width
is 1024; LMDM was trained on one condition row — and one motion row — per 40 ms video frame, so a clip of 80 rows is
3.2 s of speech and the output video runs at 25 fps. Changing any of them would need retrained networks, so they
are written once, here, and every module (the audio windows, the condition rows, the streaming motion, the plan's
seconds → frames, the video writer) imports them instead of repeating the numbers.
"""

from __future__ import annotations

__all__ = ["FPS", "HUBERT_DIM", "SAMPLES_PER_FRAME", "SAMPLE_RATE"]

#: Video frames per second of every output, and condition / motion rows per second of speech.
FPS = 25
#: HuBERT's input rate, and the only rate the rest of the pipeline sees (decoders resample to it).
SAMPLE_RATE = 16000
#: 16 kHz samples per 25 fps video frame (40 ms).
SAMPLES_PER_FRAME = 640
#: Width of one HuBERT feature row (the audio part of a condition row).
HUBERT_DIM = 1024

assert SAMPLES_PER_FRAME * FPS == SAMPLE_RATE, "a video frame must span a whole number of samples"
