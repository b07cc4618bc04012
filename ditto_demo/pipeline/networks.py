"""The networks of one checkpoint root, loaded on first use and shared by every stage and request."""

from __future__ import annotations

import threading
from pathlib import Path

from ditto_demo.engine import Network, load_network

__all__ = ["Networks"]


class Networks:
    """Lazy, thread-safe access to ``load_network(name, root, backend, device)`` results by name.

    Stages ask for what they need (``networks["decoder"]``), so a run that never registers a new portrait never
    loads the face detector. One instance serves every request of a pipeline.
    """

    def __init__(
        self, root: str | Path, backend: str = "auto", device: str = "auto", *, compile_mode: str = "off"
    ) -> None:
        self.root = Path(root)
        self.backend = backend
        self.device = device
        #: ``torch.compile`` mode of the PyTorch networks (a typed setting the app, CLI or bench passes down).
        self.compile_mode = compile_mode
        self._loaded: dict[str, Network] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Network:
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load_network(
                    name, self.root, self.backend, self.device, compile_mode=self.compile_mode
                )
            return self._loaded[name]

    def loaded(self) -> dict[str, str]:
        """``{name: "backend/device"}`` of what has been loaded so far (for reports)."""
        with self._lock:
            return {name: f"{net.backend}/{net.device}" for name, net in self._loaded.items()}
