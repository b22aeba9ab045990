"""The ``curate distill`` recipe: nested dataclasses that YAML mirrors one to one.

Precedence: defaults < YAML < ``--set a.b=value``; unknown keys are errors with a suggestion.
``student.train`` goes to TRL's ``SFTConfig`` (sequence mode), ``GKDConfig`` or
``DistillationConfig`` (token mode) as it is, and ``student.lora`` to peft's ``LoraConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import ExecutorConfig, PricesConfig, StopConfig, load_recipe
from curate.errors import ConfigError, did_you_mean
from curate.models import DEFAULT_EMBEDDER, DEFAULT_LM

__all__ = ["AcquireDistillConfig", "DistillConfig", "EvalDistillConfig", "PromptsConfig", "StudentConfig", "TeacherConfig", "load_distill_config"]

INITS = ("random", "kcenter")


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}. Got '{value}' instead.{did_you_mean(value, choices)}")


def _positive(value: Any, key: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an int >= 1. Got {value!r} instead.")


def _strategy_name(value: str, key: str) -> None:
    """A name the registry (or this paradigm's aliases) knows; whether the run can feed it is
    checked when the run is built, before round 0."""
    from curate.acquire.registry import REGISTRY

    from .run import ALIASES, SPECS

    _one_of(value, tuple(dict.fromkeys([*ALIASES, *(s.name for s in SPECS), *REGISTRY.names()])), key)


@dataclass
class PromptsConfig:
    path: str = ""
    format: str = "gsm8k"       # gsm8k | auto | jsonl | json | csv | tsv | parquet (prompt/response roles)
    columns: dict[str, str] = field(default_factory=dict)   # role -> column, other formats
    offset: int = 0             # gsm8k: skip the first rows
    limit: int | None = None    # gsm8k: then keep N rows


@dataclass
class EvalDistillConfig(PromptsConfig):
    loss_size: int = 100        # held-out loss on this many reference answers (0 = none)
    accuracy_size: int = 0      # exact match of the final answer on this many questions (0 = none)
    max_new_tokens: int = 160   # the student's answer length for exact match
    every_round: bool = False   # held-out loss as the loop's metric after every round (slower)


@dataclass
class TeacherConfig:
    kind: str = "recorded"      # recorded (answers from the pool) | hf | vllm | openai
    model: str | None = None    # the live teacher; in token mode the teacher's weights (hf id or path)
    column: str = "response"    # recorded: where the answers are
    tokenizer: str | None = None  # recorded: counts billed tokens (default: the student's)
    base_url: str | None = None   # openai-compatible servers
    device: str = "auto"
    chat: bool = True
    system: str | None = None
    max_new_tokens: int = 256
    max_input_tokens: int = 1024

    def __post_init__(self) -> None:
        _one_of(self.kind, ("recorded", "hf", "vllm", "openai"), "teacher.kind")
        if self.kind != "recorded" and not self.model:
            raise ConfigError(f"teacher.kind={self.kind} needs teacher.model (a model id, path, or served name).")


@dataclass
class StudentConfig:
    model: str = DEFAULT_LM
    mode: str = "sequence"      # sequence (SFT on the teacher's answers) | token (the teacher's distributions)
    method: str = "gkd"         # token mode: gkd (trl.experimental.gkd) | distillation (trl.DistillationTrainer)
    restart: str = "continue"   # continue | base
    lora: dict[str, Any] = field(default_factory=dict)    # peft.LoraConfig keys; empty = full fine-tuning
    train: dict[str, Any] = field(default_factory=dict)   # the TRL trainer's config keys
    chat: bool = True
    system: str | None = None
    max_length: int = 512
    max_new_tokens: int = 64    # the student's own answers (entropy, semantic, self-training)
    self_training: dict[str, Any] | None = None   # curate.responses.SelfTraining keys
    device: str = "cpu"

    def __post_init__(self) -> None:
        _one_of(self.mode, ("sequence", "token"), "student.mode")
        _one_of(self.method, ("gkd", "distillation"), "student.method")
        _one_of(self.restart, ("continue", "base"), "student.restart")


@dataclass
class AcquireDistillConfig:
    init: str = "random"        # random | kcenter
    init_size: int = 16
    # probe | probe_kcenter (this paradigm's), entropy | perplexity | semantic | entropy_kcenter (the student's
    # own uncertainty: answer_*), random, kcenter, or any registered strategy a response learner can feed.
    strategy: str = "probe"
    batch_size: int = 16
    sample: int | None = 64     # candidates scored (and probed) per round; null = all
    probe_tokens: int = 8       # probe: the teacher's first k tokens
    probe_max_input_tokens: int | None = None  # probe: longer prompts are not probed (default teacher.max_input_tokens)
    samples: int = 4            # semantic: student answers per prompt
    diverse_m: int | None = None  # *_kcenter: k-center among the top m (default 4 x batch)

    def __post_init__(self) -> None:
        _one_of(self.init, INITS, "acquire.init")
        _strategy_name(self.strategy, "acquire.strategy")
        _positive(self.init_size, "acquire.init_size")
        _positive(self.batch_size, "acquire.batch_size")
        _positive(self.sample, "acquire.sample", allow_none=True)
        _positive(self.probe_tokens, "acquire.probe_tokens")


@dataclass
class DistillConfig:
    pool: PromptsConfig = field(default_factory=PromptsConfig)
    eval: EvalDistillConfig | None = None
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    acquire: AcquireDistillConfig = field(default_factory=AcquireDistillConfig)
    embedder: str = DEFAULT_EMBEDDER
    prices: PricesConfig = field(default_factory=PricesConfig)
    stop: StopConfig = field(default_factory=lambda: StopConfig(rounds=5))  # money: answers and probes
    executor: ExecutorConfig | None = None  # where the live teacher runs (ray: on Ray workers; absent: in process)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.student.mode == "token" and not self.teacher.model:
            raise ConfigError("student.mode=token distils the teacher's token distributions: set teacher.model to "
                              "the teacher's weights (a model sharing the student's tokenizer).")


def load_distill_config(path: str | Path | None = None, overrides: list[str] | None = None,
                        data: dict | None = None) -> DistillConfig:
    """Defaults, then the YAML at ``path`` (or ``data``), then ``overrides``; relative data paths are
    resolved against the recipe's folder."""
    return load_recipe(DistillConfig, path, overrides, data=data)
