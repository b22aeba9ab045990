"""Progress bars for long work, switched off by ``--quiet``, ``CURATE_QUIET=1`` and in tests."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["enabled", "progress", "set_quiet"]

T = TypeVar("T")
_quiet: bool | None = None


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    if _quiet is not None:
        return not _quiet
    return os.environ.get("CURATE_QUIET", "") not in ("1", "true", "yes")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             min_total: int = 2) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar when progress is enabled and ``total`` is at least ``min_total``
    (a bar over one quick step is noise)."""
    if not enabled() or (total is not None and total < min_total):
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, unit=unit, leave=False)
