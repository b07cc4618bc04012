"""The benchmark's parts, one module per group, each a function of the shared :class:`BenchContext`.

* :mod:`.runs`: whole-pipeline runs (``offline``, ``online`` burst, ``paced``, ``paced_reference``, ``streams``),
  interleaved round by round;
* :mod:`.smoothness`: the streamed motion of both latency choices;
* :mod:`.networks`: each network through ``load_network`` against its bare eager module;
* :mod:`.overhead`: the per-frame work outside the networks, and :mod:`.levers`: the render path's before / after.
"""
