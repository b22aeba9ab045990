"""Plugins: how a paradigm joins curate without the core naming it.

A paradigm is a :class:`Paradigm` record — its recipe loader, its ``run`` (build + run, or
continue), its report, its CLI verbs, its strategies and its benchmark runner — made discoverable
through the ``curate.plugins`` entry-point group of an installed distribution (curate's own in
pyproject.toml; any other package can add one the same way). The core reads that group once, on
first use; nothing is registered at import time.

Every paradigm gets the same commands from the core: ``curate <name> run RECIPE``, ``curate run
RECIPE`` (a recipe's ``paradigm:`` key picks the paradigm), ``curate resume RUN_DIR`` (the run
folder's config says which) and ``--dry-run`` (the worst case, before anything is paid).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from curate.errors import ConfigError, did_you_mean

__all__ = ["GROUP", "Paradigm", "default_paradigm", "get_paradigm", "installed"]

logger = logging.getLogger(__name__)

GROUP = "curate.plugins"


@dataclass(frozen=True)
class Paradigm:
    """What a paradigm plugs in. Each hook is a callable or a ``"module:attribute"`` string, imported
    when first called (so that ``curate --help`` imports no paradigm's modules).

    Args:
        name: its name in recipes (``paradigm: sft``), on the command line and in run folders.
        summary: one line for ``curate --help``.
        load_config: ``(path, overrides, data) -> config``: the recipe (a file, or its data), checked.
        build: ``(config, folder, *, evaluate=True) -> Built``: the run's parts, made through
            :mod:`curate.build`, and the loop over ``folder`` (a :class:`~curate.runs.RunFolder`);
            nothing is bought. The core runs it (:func:`curate.runs.execute`).
        report: ``(outcome) -> None``: print what a user reads after a run (or a dry run).
        actions: ``(subparsers) -> {action: handler}``: verbs under ``curate <name>`` besides ``run``
            and ``resume`` (``export``, ``select``...); each handler gets the parsed args.
        commands: ``(subparsers) -> {command: handler}``: top-level verbs (``curate demo``).
        also: other names the paradigm answers to (a benchmark grid's ``classification``).
        strategies: its own strategies, added to the one registry.
        bench_runner: ``"module:Class"`` of its ``curate bench`` cell runner, or None.
        default: the paradigm of recipes that name none.
        on_existing: ``refuse`` (a run folder is started once; continue with ``curate resume``) or
            ``continue`` (running the recipe into the same folder again resumes it).
    """

    name: str
    summary: str
    load_config: Callable[..., Any] | str
    build: Callable[..., Any] | str
    report: Callable[[Any], None] | str
    actions: Callable[[Any], dict[str, Callable[[Any], int]]] | str | None = None
    commands: Callable[[Any], dict[str, Callable[[Any], int]]] | str | None = None
    also: tuple[str, ...] = ()
    strategies: Sequence[Any] = ()
    bench_runner: str | None = None
    default: bool = False
    on_existing: str = "refuse"

    def __post_init__(self) -> None:
        for name in ("load_config", "build", "report", "actions", "commands"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, _Lazy(value))
        if self.on_existing not in ("refuse", "continue"):
            raise ConfigError(f"Paradigm {self.name}: on_existing must be 'refuse' or 'continue'. Got {self.on_existing!r}.")


class _Lazy:
    """A ``"module:attribute"`` reference, imported on its first call: listing a paradigm loads
    none of its modules."""

    def __init__(self, ref: str) -> None:
        module, sep, attr = ref.partition(":")
        if not sep or not module or not attr:
            raise ConfigError(f"A plugin hook must be a callable or 'module:attribute'. Got {ref!r} instead.")
        self.ref = ref
        self._target = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._target is None:
            import importlib

            module, _, attr = self.ref.partition(":")
            self._target = getattr(importlib.import_module(module), attr)
        return self._target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<hook {self.ref}>"


_LOADED: dict[str, Paradigm] | None = None


def installed() -> dict[str, Paradigm]:
    """Every installed paradigm by name (the ``curate.plugins`` entry points), loaded once; their
    strategies join the registry then."""
    global _LOADED
    if _LOADED is None:
        from curate.acquire.registry import REGISTRY

        found: dict[str, Paradigm] = {}
        for point in sorted(metadata.entry_points(group=GROUP), key=lambda p: p.name):
            try:
                plugin = point.load()
            except ImportError as err:  # one broken plugin must not take the others down
                logger.warning("plugin %s (%s) cannot be imported: %s", point.name, point.value, err)
                continue
            plugin = plugin() if callable(plugin) and not isinstance(plugin, Paradigm) else plugin
            if not isinstance(plugin, Paradigm):
                raise ConfigError(f"entry point {point.name} ({point.value}) of group {GROUP} is not a curate Paradigm.")
            REGISTRY.add_all(plugin.strategies)
            found[plugin.name] = plugin
        _LOADED = found
    return _LOADED


def get_paradigm(name: str) -> Paradigm:
    known = installed()
    for p in known.values():
        if name in p.also:
            return p
    if name not in known:
        raise ConfigError(f"No paradigm '{name}' is installed. Installed: {', '.join(known) or 'none'}."
                          f"{did_you_mean(name, known)}")
    return known[name]


def default_paradigm() -> Paradigm:
    for p in installed().values():
        if p.default:
            return p
    raise ConfigError("This recipe names no paradigm (paradigm: ...), and no installed paradigm is the default.")
