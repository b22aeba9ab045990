"""An active-SFT recipe: the pool of instructions, who answers them, how prompts are chosen, the
self-training rule, and how the model is trained (TRL ``SFTTrainer``, LoRA through peft).

Read with :func:`load_sft_config`; every key is checked (unknown keys name the closest one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import (
    ExecutorConfig,
    InitConfig,
    LMConfig,
    PoolConfig,
    PricesConfig,
    StopConfig,
    from_dict,
    load_recipe,
)
from curate.errors import ConfigError, did_you_mean
from curate.models import DEFAULT_EMBEDDER, DEFAULT_LM

__all__ = ["SFTAcquireConfig", "SFTAnnotatorConfig", "SFTConfig", "from_dict", "load_sft_config"]

ANNOTATORS = ("gold", "recorded", "teacher", "human")


@dataclass
class SFTAcquireConfig:
    # entropy | perplexity | semantic | loss | ifd (the model's own uncertainty), or any strategy of
    # curate.acquire.make_strategy that needs no class probabilities (random, kcenter, kmeans, votek).
    strategy: str = "entropy"
    batch_size: int = 16
    sample: int | None = 128           # uncertainty: score at most this many candidates per round
    samples: int = 4                   # semantic: answers per prompt
    density_beta: float | None = None  # weight uncertainty by density on the index (information density)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"acquire.batch_size must be at least 1. Got {self.batch_size} instead.")


@dataclass
class SFTAnnotatorConfig:
    # gold: the pool's responses, billed as people; recorded: the pool's responses billed as teacher
    # tokens; teacher: a live LM answers; human: people write answers through a file queue.
    kind: str = "gold"
    column: str = "response"
    lm: LMConfig = field(default_factory=LMConfig)
    max_new_tokens: int = 256
    max_input_tokens: int = 1024
    queue_dir: str | None = None
    queue_format: str = "jsonl"

    def __post_init__(self) -> None:
        if self.kind not in ANNOTATORS:
            raise ConfigError(f"annotator.kind must be one of {', '.join(ANNOTATORS)}. Got '{self.kind}' instead."
                              f"{did_you_mean(self.kind, ANNOTATORS)}")


@dataclass
class SFTConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)
    eval: PoolConfig | None = None     # held-out prompts with responses: the metric is their log-likelihood
    eval_limit: int | None = 100
    model: str = DEFAULT_LM
    embedder: str = DEFAULT_EMBEDDER
    init: InitConfig = field(default_factory=lambda: InitConfig(strategy="random", size=16))
    acquire: SFTAcquireConfig = field(default_factory=SFTAcquireConfig)
    annotator: SFTAnnotatorConfig = field(default_factory=SFTAnnotatorConfig)
    self_training: dict[str, Any] | None = None   # curate.responses.SelfTraining fields
    restart: str = "continue"                      # continue | base
    lora: dict[str, Any] | None = field(default_factory=lambda: {"r": 8, "lora_alpha": 16,
                                                                   "target_modules": "all-linear"})
    train: dict[str, Any] = field(default_factory=dict)  # trl.SFTConfig fields, as they are
    chat: bool = True
    system: str | None = None
    max_length: int = 512
    max_new_tokens: int = 64
    device: str = "cpu"
    prices: PricesConfig = field(default_factory=PricesConfig)
    stop: StopConfig = field(default_factory=lambda: StopConfig(rounds=4))
    export: str = "messages"           # messages | prompt_completion
    executor: ExecutorConfig | None = None  # where the live teacher runs (ray: on Ray workers; absent: in process)
    seed: int = 0


def load_sft_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    data: dict | None = None) -> SFTConfig:
    """Defaults, then the YAML at ``path`` (or ``data``), then ``--set`` overrides; relative pool paths
    are resolved against the recipe's folder."""
    return load_recipe(SFTConfig, path, overrides, data=data)
