"""A classification recipe: the pool, the label set, who labels, how items are chosen, the learner
(logistic regression on the shared embeddings), prices and the stop rule.

Read with :func:`load_classify_config`; every key is checked (unknown keys name the closest one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curate.config import (
    AcquireConfig,
    AnnotatorConfig,
    ExecutorConfig,
    GenerateConfig,
    IndexConfig,
    InitConfig,
    LearnerConfig,
    LMConfig,
    PoolConfig,
    PricesConfig,
    StopConfig,
    load_recipe,
)
from curate.models import DEFAULT_EMBEDDER

__all__ = ["ClassifyConfig", "load_classify_config"]


@dataclass
class ClassifyConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)
    eval: PoolConfig | None = None
    labels: list[str] = field(default_factory=list)
    embedder: str = DEFAULT_EMBEDDER
    index: IndexConfig = field(default_factory=IndexConfig)
    init: InitConfig = field(default_factory=InitConfig)
    acquire: AcquireConfig = field(default_factory=AcquireConfig)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    prices: PricesConfig = field(default_factory=PricesConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    generate: GenerateConfig | None = None  # generation as a query source (off when absent)
    executor: ExecutorConfig | None = None  # where the pool is embedded and the LM runs (absent: in process)
    seed: int = 0


def load_classify_config(path: str | Path | None = None, overrides: list[str] | None = None,
                         data: dict | None = None) -> ClassifyConfig:
    """Defaults, then the YAML file at ``path`` (or ``data``), then ``overrides``; relative paths in
    the file are resolved against the file's folder."""
    return load_recipe(ClassifyConfig, path, overrides, data=data)
