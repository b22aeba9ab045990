"""One small error hierarchy: every error curate raises on purpose is a ``CurateError``.

Each subclass also derives from the builtin a caller would naturally catch (``ValueError``,
``ImportError``, ...), so ``except ValueError`` keeps working for code that does not know curate.
Messages say what was expected, what came, what is available, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BackendError",
    "ConfigError",
    "CurateError",
    "DataError",
    "MissingDependencyError",
    "did_you_mean",
]


class CurateError(Exception):
    """Base class of every error curate raises on purpose."""


class ConfigError(CurateError, ValueError):
    """A parameter or configuration value is invalid."""


class DataError(CurateError, ValueError):
    """Input data is malformed: the message names the file, line/row and field."""


class MissingDependencyError(CurateError, ImportError):
    """An optional part is used but its package is not installed; the message names the extra."""


class BackendError(CurateError, RuntimeError):
    """A language-model backend failed (HTTP error after retries, bad response, ...)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
