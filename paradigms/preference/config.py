"""The ``curate prefs run`` recipe: nested dataclasses that YAML mirrors one to one.

Precedence, as for ``curate run``: defaults < YAML < ``--set a.b=value``; unknown keys are errors
with a suggestion. ``learner.train`` and ``learner.lora`` are passed to TRL's ``DPOConfig`` /
``RewardConfig`` and peft's ``LoraConfig`` as they are, so their keys are checked there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import ExecutorConfig, LMConfig, PricesConfig, StopConfig, load_recipe
from curate.errors import ConfigError, did_you_mean
from curate.models import DEFAULT_EMBEDDER

__all__ = ["AcquirePrefsConfig", "AnnotatorPrefsConfig", "CandidatesConfig", "JudgeConfig", "LearnerPrefsConfig",
           "PairsConfig", "PrefsConfig", "load_prefs_config"]

_POOL_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hh_rlhf", "alpaca_eval", "prompts")


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}. Got '{value}' instead.{did_you_mean(value, choices)}")


@dataclass
class PairsConfig:
    path: str = ""
    format: str = "jsonl"      # a pairs/preferences file, hh_rlhf, alpaca_eval, or prompts (sample candidates)
    seed: int = 0              # where each chosen response is put (a or b)
    offset: int = 0            # skip the first rows (a held-out set from the same file)
    limit: int | None = None   # then keep N pairs (or prompts)

    def __post_init__(self) -> None:
        _one_of(self.format, _POOL_FORMATS, "pool.format")


@dataclass
class CandidatesConfig:        # pool.format = prompts: n responses per prompt from the policy (lm)
    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    pairing: str = "adjacent"  # adjacent | all
    chat: bool = True


@dataclass
class AcquirePrefsConfig:
    init: str = "random"       # random | prompt_diversity
    init_size: int = 16
    strategy: str = "margin"   # random | margin | disagreement | entropy_certainty | prompt_diversity | margin_diverse
    batch_size: int = 16
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("init_size", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"acquire.{key} must be at least 1. Got {getattr(self, key)} instead.")


@dataclass
class JudgeConfig:
    instruction: str | None = None   # None: the default (helpful, honest and harmless)
    ties: bool = True
    tie_band: float = 0.05
    consistent: bool = False
    chat: bool = True
    max_prompt_tokens: int = 256
    max_response_tokens: int = 256
    batch_size: int = 8


@dataclass
class AnnotatorPrefsConfig:
    kind: str = "gold"               # gold | judge | human | hybrid
    threshold: float = 0.8           # hybrid: keep the judge's label at or above this confidence
    queue_dir: str | None = None     # human / hybrid: where batches go and answers are read
    queue_format: str = "jsonl"
    human: str = "queue"             # hybrid: queue (people) or gold (people simulated by the data)

    def __post_init__(self) -> None:
        _one_of(self.kind, ("gold", "judge", "human", "hybrid"), "annotator.kind")
        _one_of(self.human, ("queue", "gold"), "annotator.human")


@dataclass
class LearnerPrefsConfig:
    kind: str = "reward_model"       # reward_model (embeddings) | dpo | trl_reward
    model: str | None = None         # dpo / trl_reward: the initial model (default: lm.model)
    members: int = 5                 # reward_model: bootstrap ensemble size
    C: float = 1.0
    beta: float = 0.1                # dpo
    mode: str = "iterative"          # dpo: iterative | retrain
    chat: bool = True
    lora: dict[str, Any] = field(default_factory=dict)    # peft.LoraConfig keys; empty = full fine-tuning
    train: dict[str, Any] = field(default_factory=dict)   # trl.DPOConfig / trl.RewardConfig keys

    def __post_init__(self) -> None:
        _one_of(self.kind, ("reward_model", "dpo", "trl_reward"), "learner.kind")


@dataclass
class PrefsConfig:
    pool: PairsConfig = field(default_factory=PairsConfig)
    eval: PairsConfig | None = None
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    embedder: str = DEFAULT_EMBEDDER
    acquire: AcquirePrefsConfig = field(default_factory=AcquirePrefsConfig)
    annotator: AnnotatorPrefsConfig = field(default_factory=AnnotatorPrefsConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    learner: LearnerPrefsConfig = field(default_factory=LearnerPrefsConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    prices: PricesConfig = field(default_factory=PricesConfig)
    stop: StopConfig = field(default_factory=lambda: StopConfig(rounds=5))
    export: str = "preferences.jsonl"   # written into the run folder after every invocation
    executor: ExecutorConfig | None = None  # where the LM (policy samples, judge) runs (ray: on Ray workers)
    seed: int = 0


def load_prefs_config(path: str | Path | None = None, overrides: list[str] | None = None,
                      data: dict | None = None) -> PrefsConfig:
    """Defaults, then the YAML at ``path`` (or ``data``), then ``overrides``; relative pool paths
    are resolved against the recipe's folder."""
    return load_recipe(PrefsConfig, path, overrides, data=data)
