"""The one way a seed is drawn when a run did not ask for one.

Every run's seed is decided in :func:`ditto_demo.pipeline.plan.plan_run` (which calls :func:`draw_seed` when the
controls leave it open) and reported with the result, so any video can be made again. The app asks its service
for a seed when it wants to show one before the run; that goes through the same function.
"""

from __future__ import annotations

import secrets

__all__ = ["SEED_BOUND", "draw_seed"]

#: Seeds are drawn below this bound: the range ``Controls.seed`` accepts, so a reported seed can be fed back.
SEED_BOUND = 2**31 - 1


def draw_seed() -> int:
    """A fresh random seed (valid as a ``Controls.seed``)."""
    return secrets.randbelow(SEED_BOUND + 1)
