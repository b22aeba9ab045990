"""An executor block that needs Ray is refused while the run is built, before anything is bought,
where Ray is not installed (runs without the ray extra)."""

from __future__ import annotations

import importlib.util

import pytest

from curate.build import LazyBackend
from curate.config import ExecutorConfig, LMConfig
from curate.errors import MissingDependencyError


def test_a_ray_executor_without_ray_is_refused_at_build_time(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'curate\[ray\]'"):
        LazyBackend(LMConfig(), ExecutorConfig(kind="ray"))
    lazy = LazyBackend(LMConfig(), ExecutorConfig(kind="local"))   # in process: nothing to check, nothing loaded
    assert not lazy.loaded
    assert not LazyBackend(LMConfig()).loaded
