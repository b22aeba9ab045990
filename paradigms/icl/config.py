"""Configuration of the ICL paradigm: nested dataclasses that ``recipes/icl-*.yaml`` mirror one to one.

The core's blocks are reused as they are (``PoolConfig``, ``LMConfig``, ``AnnotatorConfig``,
``PricesConfig``), so a recipe reads like a ``curate run`` recipe plus four ICL blocks: ``prompt``,
``retrieve``, ``annotate`` and ``evaluate``. Precedence: defaults < YAML < ``--set a.b=value``;
unknown keys are errors with a suggestion (``curate.config.from_dict``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import (
    AnnotatorConfig,
    ExecutorConfig,
    LMConfig,
    PoolConfig,
    PricesConfig,
    load_recipe,
)
from curate.errors import ConfigError, did_you_mean
from curate.models import DEFAULT_EMBEDDER

__all__ = ["CALIBRATIONS", "METHODS", "ORDERS", "RERANKS", "AnnotateConfig", "EvaluateConfig", "ICLConfig", "PromptConfig",
           "RetrieveConfig", "load_icl_config", "template_fields"]

METHODS = ("knn", "random", "fixed", "zero_shot")
RERANKS = ("none", "demo_perplexity", "input_perplexity")
ORDERS = ("similar_last", "similar_first", "random")
CALIBRATIONS = ("raw", "prompt", "dataset")  # the accuracies of `icl eval`: see EvaluateConfig
STRATEGIES = ("votek", "kcenter", "kmeans", "random", "uncertainty")


def template_fields(template: str) -> tuple[str, ...]:
    """The fields a template uses, in order of first use (``"{premise} / {hypothesis}"`` ->
    ``("premise", "hypothesis")``)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ConfigError(f"The template {template!r} is not a valid format string ({err}). "
                          "Double literal braces: '{{' and '}}'.") from None
    return tuple(dict.fromkeys(names))


def _fields(template: str) -> set[str]:
    return set(template_fields(template))


def _choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}. Got '{value}' instead.{did_you_mean(value, choices)}")


def _positive(value: int | None, name: str, *, allow_none: bool = True, low: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}. Got {value!r} instead.")


@dataclass
class PromptConfig:
    """How a prompt looks.

    A demonstration is ``input_template`` and ``answer_template`` on two lines (plain), or a user
    and an assistant turn (chat); demonstrations are joined by ``separator``. The prompt ends with
    the test input and the answer template cut just before ``{label}``, so the label word is the
    next token: ``"Review: ...\\nSentiment:"`` followed by the option ``" positive"``.

    ``input_template`` may use any columns of the pool and the test inputs (``{premise}`` and
    ``{hypothesis}``, ``{question}`` and ``{context}``), not only ``{text}`` (the text role); only
    the label needs a role. They are checked against the pool's columns before anything is spent.
    With fields other than ``{text}``, the filled-in template is what is embedded for retrieval,
    content-free inputs fill every field, and the ``max_*_tokens`` cuts apply to each field.
    """

    instruction: str = ""                  # first paragraph (plain) or system message (chat)
    input_template: str = "Input: {text}"  # any pool columns: "Premise: {premise}\nHypothesis: {hypothesis}"
    answer_template: str = "Label: {label}"  # must end with {label}
    separator: str = "\n\n"
    chat: bool = False
    verbalizers: dict[str, str] = field(default_factory=dict)  # label -> the word the model answers with
    max_demo_tokens: int | None = None     # cut each demonstration's text to this many tokens
    max_input_tokens: int | None = None    # cut the test input's text to this many tokens
    max_prompt_tokens: int | None = None   # default: the model's context; least relevant demos dropped first

    def __post_init__(self) -> None:
        fields = template_fields(self.input_template)
        if not fields:
            raise ConfigError("prompt.input_template must use at least one field: {text}, or any pool columns such as "
                              f"{{premise}} and {{hypothesis}}. Got {self.input_template!r}.")
        odd = [f for f in fields if not f.isidentifier()]
        if odd:
            raise ConfigError(f"prompt.input_template fields must be plain column names (no positions, attributes or "
                              f"indexes); got {odd} in {self.input_template!r}.")
        if "label" in fields:
            raise ConfigError("prompt.input_template must not use {label}: the label belongs in answer_template "
                              f"(shown for demonstrations, predicted for the input). Got {self.input_template!r}.")
        if not self.answer_template.endswith("{label}") or _fields(self.answer_template) != {"label"}:
            raise ConfigError("prompt.answer_template must use the field {label} once, at its very end (the "
                              f"label word is what the model predicts next). Got {self.answer_template!r}.")
        for name in ("max_demo_tokens", "max_input_tokens", "max_prompt_tokens"):
            _positive(getattr(self, name), f"prompt.{name}")


@dataclass
class RetrieveConfig:
    """Which demonstrations each test input gets, and in which order.

    ``knn``: the ``candidates`` nearest labelled examples by cosine similarity (KATE, Liu et al.
    2022), optionally filtered by perplexity (``rerank``), label-balanced, or spread by MMR, then
    the ``k`` best. ``random``: ``k`` drawn per input. ``fixed``: one draw of ``k`` for every input
    (the usual random baseline; the whole prompt head is then shared). ``zero_shot``: none.
    """

    method: str = "knn"
    k: int = 4
    candidates: int = 16
    rerank: str = "none"
    order: str = "similar_last"            # most similar next to the input (KATE's best order)
    balance_labels: bool = False
    mmr: float | None = None               # MMR trade-off lambda in [0, 1]; None = off

    def __post_init__(self) -> None:
        _choice(self.method, METHODS, "retrieve.method")
        _choice(self.rerank, RERANKS, "retrieve.rerank")
        _choice(self.order, ORDERS, "retrieve.order")
        _positive(self.k, "retrieve.k", allow_none=False, low=0)
        _positive(self.candidates, "retrieve.candidates", allow_none=False)
        if self.mmr is not None and not 0.0 <= self.mmr <= 1.0:
            raise ConfigError(f"retrieve.mmr must lie in [0, 1] (or be null to switch MMR off). Got {self.mmr!r}.")
        if self.method == "knn" and self.candidates < self.k:
            raise ConfigError(f"retrieve.candidates ({self.candidates}) must be at least retrieve.k ({self.k}).")

    @property
    def needs_vectors(self) -> bool:
        """Whether demonstrations are chosen by similarity (``knn`` with ``k > 0``): only then is anything
        embedded; ``random``, ``fixed`` and ``zero_shot`` never look at the vectors."""
        return self.method == "knn" and self.k > 0


@dataclass
class AnnotateConfig:
    """Selective annotation: which unlabelled examples to buy labels for, to serve as demonstrations.

    ``votek`` / ``kcenter`` / ``kmeans`` / ``random`` choose the whole budget in one round (their
    selection does not depend on labels). ``uncertainty`` buys ``init_size`` by ``init`` first and
    the rest over ``rounds - 1`` rounds, each the candidates with the highest entropy of the LM's
    option probabilities (scored on at most ``subsample`` candidates per round, with ``shots``
    nearest labelled demonstrations in each scoring prompt).
    """

    strategy: str = "votek"
    budget: int = 18
    rounds: int = 1
    init: str = "random"
    init_size: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # e.g. votek: {k: 10}
    subsample: int | None = 2000
    shots: int = 0

    def __post_init__(self) -> None:
        _choice(self.strategy, STRATEGIES, "annotate.strategy")
        _positive(self.budget, "annotate.budget", allow_none=False)
        _positive(self.rounds, "annotate.rounds", allow_none=False)
        _positive(self.init_size, "annotate.init_size")
        _positive(self.subsample, "annotate.subsample")
        _positive(self.shots, "annotate.shots", allow_none=False, low=0)
        if self.strategy == "uncertainty" and self.rounds < 2:
            raise ConfigError("annotate.strategy 'uncertainty' needs labels to score with, so annotate.rounds must be "
                              "at least 2 (round 0 buys annotate.init_size by annotate.init).")


@dataclass
class EvaluateConfig:
    """How ``curate icl eval`` scores, and which accuracy is its result.

    ``primary`` names the one accuracy that is the result (printed first, ``summary.result`` in the
    JSON); the others are printed as secondary lines. ``raw``: the argmax of the LM's option
    probabilities. ``prompt``: contextual calibration (Zhao et al. 2021) of each prompt by the
    content-free estimate of its own demonstrations. ``dataset``: every prompt calibrated by the mean
    content-free estimate over all demonstration sets. Default: ``dataset`` when ``calibrate`` is
    true (with per-input demonstrations ``prompt`` also cancels what they say; with one set for every
    input the two are equal), ``raw`` when it is false.
    """

    calibrate: bool = True                 # contextual calibration (Zhao et al. 2021), reported beside raw
    content_free: list[str] = field(default_factory=lambda: ["N/A", "", "[MASK]"])
    seeds: list[int] = field(default_factory=lambda: [0])
    primary: str | None = None             # raw | prompt | dataset; None: dataset if calibrate else raw

    def __post_init__(self) -> None:
        if self.primary is not None:
            _choice(self.primary, CALIBRATIONS, "evaluate.primary")
            if self.primary != "raw" and not self.calibrate:
                raise ConfigError(f"evaluate.primary '{self.primary}' is a calibrated accuracy, but evaluate.calibrate "
                                  "is false: set evaluate.calibrate=true, or evaluate.primary=raw.")
        if self.calibrate and not self.content_free:
            raise ConfigError("evaluate.content_free must list at least one content-free input (e.g. 'N/A') when "
                              "evaluate.calibrate is true.")
        if not self.seeds:
            raise ConfigError("evaluate.seeds must list at least one seed.")

    @property
    def result(self) -> str:
        """The calibration whose accuracy is the result: ``primary``, or its default."""
        if self.primary is not None:
            return self.primary
        return "dataset" if self.calibrate else "raw"


@dataclass
class ICLConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)  # labelled demonstrations (select, eval) or the pool to annotate
    inputs: PoolConfig | None = None       # the test inputs (select: text; eval: text and label)
    labels: list[str] = field(default_factory=list)
    embedder: str = DEFAULT_EMBEDDER
    lm: LMConfig = field(default_factory=LMConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    prices: PricesConfig = field(default_factory=PricesConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    executor: ExecutorConfig | None = None  # where the LM (scoring, labels) runs (ray: on Ray workers; absent: in process)
    seed: int = 0

    def __post_init__(self) -> None:
        odd = [label for label in self.labels if isinstance(label, (bool, float)) or label is None]
        if odd:
            raise ConfigError(f"labels must be strings (or integers). Got {odd}: YAML reads unquoted yes/no/true/false "
                              "as booleans, so quote them: labels: ['no', 'yes'].")
        if self.labels and len(set(map(str, self.labels))) != len(self.labels):
            raise ConfigError(f"labels must be distinct. Got {self.labels}.")
        unknown = sorted(set(self.prompt.verbalizers) - set(map(str, self.labels))) if self.labels else []
        if unknown:
            raise ConfigError(f"prompt.verbalizers names labels {unknown} that are not in labels {self.labels}.")


def load_icl_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    data: dict | None = None) -> ICLConfig:
    """Defaults, then the YAML recipe at ``path`` (or ``data``), then ``a.b=value`` overrides. Relative
    pool paths in the recipe are resolved against the recipe's folder when they exist there."""
    return load_recipe(ICLConfig, path, overrides, data=data, pools=("pool", "inputs"), require_pool=False,
                       missing_hint=" The shipped ICL recipes are recipes/icl-*.yaml.")
