"""Self-training's one rule shared by every paradigm: how many pseudo-labelled rows may sit beside
the bought ones. Pseudo rows are the learner's own confident guesses; capping their share keeps a
wrong guess from outvoting what was paid for."""

from __future__ import annotations

import math

__all__ = ["pseudo_cap"]


def pseudo_cap(max_fraction: float, bought: int) -> int:
    """The most pseudo rows allowed beside ``bought`` bought rows so that they are at most
    ``max_fraction`` of all training rows (0.25: one pseudo row for every three bought)."""
    return int(math.floor(max_fraction / (1 - max_fraction) * bought + 1e-9))
