"""The ``curate`` console script: the core's commands plus each paradigm's.

The core's CLI (:mod:`curate.cli`) takes extensions, so that it never imports a paradigm; this
module lists them. Each paradigm's CLI module is imported only here, and only for its commands.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from curate.cli import main as core_main

__all__ = ["EXTENSIONS", "main"]

def _icl(subparsers) -> dict:
    from curate.paradigms.icl.cli import register

    return register(subparsers)


def _prefs(subparsers) -> dict:
    from curate.paradigms.preference.cli import register

    return register(subparsers)


def _distill(subparsers) -> dict:
    from curate.paradigms.distill.cli import register

    return register(subparsers)


def _sft(subparsers) -> dict:
    from curate.paradigms.sft.cli import register

    return register(subparsers)


# One per paradigm that has landed.
EXTENSIONS: list = [_icl, _prefs, _sft, _distill]


def main(argv: Sequence[str] | None = None) -> int:
    return core_main(argv, extensions=EXTENSIONS)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
