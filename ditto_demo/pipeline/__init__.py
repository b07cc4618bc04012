"""Portrait + speech → talking-head video: the typed controls and the pipeline shared by the app, CLI and API.

    from ditto_demo.pipeline import Controls, Pipeline

    pipeline = Pipeline("/path/to/checkpoints")            # or None: DITTO_CHECKPOINTS / the Hub
    result = pipeline.generate("portrait.png", "speech.mp3", Controls(emotion="happy", seed=7), output="out.mp4")
    for frame in pipeline.stream("portrait.png", microphone_chunks, Controls()):
        show(frame.image)
"""

from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pipeline import Pipeline, Result, StreamFrame
from ditto_demo.pipeline.plan import Limits

__all__ = ["Controls", "Limits", "Pipeline", "Result", "StreamFrame"]
