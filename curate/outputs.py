"""Where a command writes: never over one of its inputs, never under a path that is a file, and
said before any work (or money) is spent."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from curate.errors import ConfigError

__all__ = ["check_output"]


def check_output(out: str | Path, *, inputs: Iterable[str | Path | None] = (), what: str = "--out",
                 folder: bool = False) -> Path:
    """``out`` as a path a command may write (a file, or with ``folder`` a directory), after
    refusing one that is an input, lies under a file, or is a directory where a file goes."""
    path = Path(out)
    for given in inputs:
        if given is None or not isinstance(given, (str, os.PathLike)):
            continue
        source = Path(given)
        if source.exists() and path.exists() and _same(source, path):
            raise ConfigError(f"{what} {out} is the input {given}: writing there would destroy it. Choose another "
                              f"{what} path.")
    parent = path.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ConfigError(f"{what} {out}: {ancestor} is a file, so nothing can be written under it.")
            break
    if not folder and path.is_dir():
        raise ConfigError(f"{what} {out} is a directory; give a file name (e.g. {path / 'out.jsonl'}).")
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {out} is a file; give a folder.")
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()
