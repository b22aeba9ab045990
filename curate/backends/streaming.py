"""Items run many at a time, with each item's own token usage: the machinery every backend that
keeps several requests in flight shares (the OpenAI-compatible one, the Ray one).

``stream(fn, items)`` runs ``fn(item)`` (which calls the backend) for every item, up to ``limit`` at
once on threads, and yields ``(position, result, usage)`` in input order as the completed prefix
grows, ``usage`` being the tokens of that item's own calls: what the loop journals and charges per
item, as it arrives. A backend records each call's tokens with :meth:`ItemStreams._count_item`, which
adds them to the usage of every item running on that thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from curate.backends.base import Usage

__all__ = ["ItemStreams"]

T = TypeVar("T")
R = TypeVar("R")


class ItemStreams:
    """Mixin: per-thread item usage and the bounded, ordered fan-out of :meth:`_fan_out_items`."""

    _local: threading.local

    def _item_local(self) -> threading.local:
        local = getattr(self, "_local", None)
        if local is None:
            local = self._local = threading.local()
        return local

    def _in_item(self) -> bool:
        return bool(getattr(self._item_local(), "depth", 0))

    def _count_item(self, input_tokens: int, output_tokens: int, kind: str) -> None:
        """Add one call's tokens to the usage of every item running on this thread."""
        for used in getattr(self._item_local(), "usages", None) or ():
            used.add(input_tokens, output_tokens, kind=kind)

    def _run_item(self, fn: Callable[[T], R], item: T) -> tuple[R, Usage]:
        """``fn(item)`` with the usage of its calls counted apart (and in every enclosing item's)."""
        local = self._item_local()
        used = Usage()
        stack = getattr(local, "usages", None)
        if stack is None:
            stack = local.usages = []
        stack.append(used)
        local.depth = getattr(local, "depth", 0) + 1
        try:
            return fn(item), used
        finally:
            local.depth -= 1
            stack.pop()

    def _fan_out_items(self, fn: Callable[[T], R], items: Iterable[T], limit: int, *,
                       thread_name: str = "curate-item") -> Iterator[tuple[int, Any, Usage]]:
        """Up to ``limit`` items at once; the completed prefix in input order. The first item runs
        alone (what it teaches the backend, a server's dialect say, the others need not fail to
        learn). When an item fails, those already answered are yielded (they were paid for) before
        its error is raised."""
        source = enumerate(items)
        first = next(source, None)
        if first is None:
            return
        yield (first[0], *self._run_item(fn, first[1]))
        if limit == 1:
            for k, item in source:
                yield (k, *self._run_item(fn, item))
            return
        executor = ThreadPoolExecutor(max_workers=limit, thread_name_prefix=thread_name)
        window: deque[tuple[int, Future]] = deque()

        def top_up() -> None:
            # A few queued beyond those in flight keep every worker busy; the pool bounds the flight.
            while len(window) < 2 * limit:
                nxt = next(source, None)
                if nxt is None:
                    return
                window.append((nxt[0], executor.submit(self._run_item, fn, nxt[1])))

        try:
            top_up()
            while window:
                k, future = window[0]
                try:
                    result, used = future.result()
                except Exception:
                    for _, queued in window:
                        queued.cancel()
                    for j, other in list(window)[1:]:  # answered and paid for: still the caller's
                        if not other.cancelled() and other.exception() is None:
                            yield (j, *other.result())
                    raise
                window.popleft()
                yield k, result, used
                top_up()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
