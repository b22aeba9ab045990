"""One registry of strategies: every strategy of every paradigm under one unique name, with what it
needs read by the machine, not written as prose.

A strategy's ``needs`` name what the run must provide before round 0:

* ``probs`` — the learner's class probabilities (a classifier);
* ``responses`` — a learner that answers prompts itself (SFT, distillation students);
* ``arrays:<name>`` — a per-item array the learner gives (``arrays:margin`` of a preference learner);
* ``index`` — the shared embedding index; ``backend`` — an LM; ``teacher`` — a teacher that answers;
* ``pool`` — the pool's texts (always there in a loop).

:func:`check_needs` compares them with what a run has (the learner's declared capabilities,
:func:`curate.learners.capabilities_of`, plus the index, LM and teacher the recipe builds) and
refuses a recipe before anything is paid for, naming the strategies that *would* work.

The core's strategies are the table below. A paradigm adds its own with :meth:`StrategyRegistry.add`
when it is loaded (``curate.plugins``), and may give short names of its own recipes
(``entropy`` in an SFT recipe) as aliases of registry names (``answer_entropy``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.acquire.base import Strategy
from curate.errors import ConfigError, did_you_mean

__all__ = ["REGISTRY", "StrategyContext", "StrategyRegistry", "StrategySpec", "check_needs", "describe_need"]

_NEED_TEXT = {
    "probs": "class probabilities from the learner",
    "responses": "a learner that answers prompts",
    "index": "the shared embedding index",
    "backend": "an LM (the recipe's lm block)",
    "teacher": "a teacher that answers prompts",
    "pool": "the pool's texts",
}


def describe_need(need: str) -> str:
    if need.startswith("arrays:"):
        return f"the learner's per-item array '{need[7:]}'"
    return _NEED_TEXT.get(need, need)


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may be built with, besides its own parameters: the run's parts."""

    learner: Any = None
    backend: Callable[[], Any] | None = None   # the recipe's LM, built on first use
    teacher: Any = None
    embedder: Any = None
    index: Any = None
    seed: int = 0
    run_dir: Path | None = None
    batch_size: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # a paradigm's extras (ICL's prompt builder...)

    def lm(self, who: str):
        if self.backend is None:
            raise ConfigError(f"strategy '{who}' scores with an LM, and this run has none: set the recipe's lm block.")
        return self.backend()


@dataclass(frozen=True)
class StrategySpec:
    """A named strategy: ``build(context, **params) -> Strategy``, what it needs, and one line on it."""

    name: str
    build: Callable[..., Strategy]
    needs: frozenset[str] = frozenset()
    summary: str = ""
    owner: str = "core"   # who registered it (the core, or a paradigm's name)


class StrategyRegistry:
    """Strategies by name. ``add`` refuses a name taken by another owner: names mean one thing."""

    def __init__(self, specs: Iterable[StrategySpec] = ()) -> None:
        self._specs: dict[str, StrategySpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: StrategySpec) -> None:
        known = self._specs.get(spec.name)
        if known is not None and known.owner != spec.owner:
            raise ConfigError(f"strategy '{spec.name}' is registered by {known.owner} already; {spec.owner} must "
                              "choose another name (one name, one meaning).")
        self._specs[spec.name] = spec

    def add_all(self, specs) -> None:
        """Add a paradigm's specs; adding the same owner's specs again changes nothing, so a
        paradigm may call this before building (the plugin loader does too)."""
        for spec in specs:
            self.add(spec)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self):
        return iter(self._specs.values())

    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str, aliases: Mapping[str, str] | None = None) -> StrategySpec:
        resolved = (aliases or {}).get(name, name)
        if resolved not in self._specs:
            choices = [*self._specs, *(aliases or {})]
            raise ConfigError(f"Unknown strategy '{name}'. Known: {', '.join(sorted(choices))}.{did_you_mean(name, choices)}")
        return self._specs[resolved]

    def usable(self, available: Iterable[str]) -> list[str]:
        have = set(available)
        return [s.name for s in self._specs.values() if s.needs <= have]

    def build(self, name: str, params: Mapping[str, Any] | None = None, context: StrategyContext | None = None, *,
              available: Iterable[str] | None = None, aliases: Mapping[str, str] | None = None,
              who: str = "this run") -> Strategy:
        """The strategy ``name`` with ``params``; with ``available``, refused first when the run
        lacks what it needs (the message names the strategies it could use instead)."""
        spec = self.get(name, aliases)
        if available is not None:
            check_needs(spec, available, who=who, registry=self, aliases=aliases)
        try:
            return spec.build(context or StrategyContext(), **dict(params or {}))
        except TypeError as err:
            raise ConfigError(f"Bad parameters for strategy '{name}': {err}.") from None


def check_needs(spec: StrategySpec, available: Iterable[str], *, who: str = "this run",
                registry: StrategyRegistry | None = None, aliases: Mapping[str, str] | None = None) -> None:
    have = set(available)
    missing = sorted(spec.needs - have)
    if not missing:
        return
    registry = registry or REGISTRY
    usable = registry.usable(have)
    short = {v: k for k, v in (aliases or {}).items()}
    shown = [f"{short[n]} ({n})" if n in short else n for n in usable]
    raise ConfigError(f"strategy '{spec.name}' needs {', '.join(describe_need(m) for m in missing)}, which {who} does "
                      f"not have. Strategies {who} can use: {', '.join(shown)}.")


# ---------------------------------------------------------------------------------------------- the core's


def _diversity(name: str):
    from curate.acquire import diversity

    return getattr(diversity, name)


def _llm(name: str):
    from curate.acquire import llm

    return getattr(llm, name)


def _with_backend(ctx: StrategyContext, params: dict, who: str) -> dict:
    if "backend" not in params:
        params = {**params, "backend": ctx.lm(who)}
    return params


def _top(scorer):
    from curate.acquire.strategies import TopK

    return TopK(scorer)


def _class(measure: str):
    def build(ctx):
        from curate.acquire.uncertainty import ClassUncertainty

        return _top(ClassUncertainty(measure))

    return build


def _array(name: str, kind: str):
    def build(ctx):
        from curate.acquire import uncertainty

        scorer = {"bald": lambda: uncertainty.BALD(), "committee": lambda: uncertainty.Committee(name),
                  "array": lambda: uncertainty.ArrayScore(name)}[kind]()
        return _top(scorer)

    return build


def _density_entropy(ctx, beta: float = 1.0, k: int = 10):
    from curate.acquire.uncertainty import ClassUncertainty
    from curate.acquire.wrappers import DensityWeighted

    return _top(DensityWeighted(ClassUncertainty("entropy"), beta, k))


def _entropy_kcenter(ctx, m: int | None = None):
    from curate.acquire.uncertainty import ClassUncertainty
    from curate.acquire.wrappers import TopThenDiverse

    return TopThenDiverse(ClassUncertainty("entropy"), m)


def _random(ctx, allow_fewer: bool = False):
    from curate.acquire.strategies import Random

    return Random(allow_fewer=allow_fewer)


def _answer(measure: str, diverse: bool = False):
    """The response learner's own uncertainty about its answer (curate.responses.AnswerUncertainty)."""

    def build(ctx, sample: int | None = 128, samples: int = 4, density_beta: float | None = None,
              m: int | None = None, **params):
        from curate.acquire.strategies import TopK
        from curate.acquire.wrappers import DensityWeighted, TopThenDiverse
        from curate.responses import AnswerUncertainty

        if ctx.learner is None:
            raise ConfigError(f"strategy 'answer_{measure}' scores a response learner's answers; none was given.")
        scorer = AnswerUncertainty(ctx.learner, measure, samples=samples, sample=sample, seed=ctx.seed,
                                   embedder=params.pop("embedder", ctx.embedder), **params)
        if diverse:
            return TopThenDiverse(scorer, m if m is not None else 4 * (ctx.batch_size or 16))
        if density_beta is not None:
            scorer = DensityWeighted(scorer, density_beta)
        return TopK(scorer, allow_fewer=True)

    return build


def _typical(name: str):
    def build(ctx, **params):
        from curate.acquire import typical

        cls = getattr(typical, name)
        classes = getattr(ctx.learner, "classes", None)
        if name == "ProbCover" and "n_classes" not in params and classes is not None and len(classes) >= 2:
            params = {**params, "n_classes": len(classes)}   # round 0 has no probabilities to count them
        return cls(**params)

    return build


def _budget_switch(ctx, low: str = "typiclust", high: str = "margin", per_class: int = 10, at: int | None = None,
                   low_params: Mapping[str, Any] | None = None, high_params: Mapping[str, Any] | None = None):
    from curate.acquire.typical import BudgetSwitch

    for part, name in (("low", low), ("high", high)):
        if name == "budget_switch" or name not in REGISTRY:
            raise ConfigError(f"budget_switch's '{part}' must name another strategy; got '{name}'."
                              f"{did_you_mean(str(name), REGISTRY.names())}")
    return BudgetSwitch(REGISTRY.build(low, low_params, ctx), REGISTRY.build(high, high_params, ctx),
                        per_class=per_class, at=at)


def _spec(name, build, needs="", summary=""):
    return StrategySpec(name, build, frozenset(n for n in needs.split() if n), summary)


REGISTRY = StrategyRegistry([
    _spec("random", _random, "", "uniformly random candidates: the baseline"),
    _spec("least_confidence", _class("least_confidence"), "probs", "1 - the top class probability"),
    _spec("margin", _class("margin"), "probs", "smallest gap between the two top classes"),
    _spec("entropy", _class("entropy"), "probs", "entropy of the class probabilities"),
    _spec("bald", _array("mc_probs", "bald"), "arrays:mc_probs", "BALD over MC-dropout samples"),
    _spec("vote_entropy", _array("vote_entropy", "committee"), "arrays:committee_probs", "committee vote entropy"),
    _spec("kl_disagreement", _array("kl", "committee"), "arrays:committee_probs", "committee KL disagreement"),
    _spec("token_entropy", _array("token_entropy", "array"), "arrays:token_entropy", "a per-item token entropy array"),
    _spec("perplexity", _array("perplexity", "array"), "arrays:perplexity", "a per-item perplexity array"),
    _spec("density_entropy", _density_entropy, "probs index", "entropy weighted by density on the index"),
    _spec("entropy_kcenter", _entropy_kcenter, "probs index", "the most uncertain, spread out by k-center"),
    _spec("kcenter", lambda ctx, **p: _diversity("KCenterGreedy")(**p), "index", "k-center greedy (CoreSet)"),
    _spec("kmeans", lambda ctx, **p: _diversity("KMeansCentroids")(**p), "index", "the item nearest each k-means centroid"),
    _spec("votek", lambda ctx, **p: _diversity("VoteK")(**p), "index", "vote-k on the k-NN graph"),
    _spec("badge", lambda ctx, **p: _diversity("BADGE")(**p), "probs index", "k-means++ on gradient embeddings"),
    _spec("typiclust", _typical("TypiClust"), "index", "the most typical item of the least-labelled k-means clusters"),
    _spec("probcover", _typical("ProbCover"), "index", "greedy coverage by pure balls on the index"),
    _spec("typical_margin", _typical("TypicalMargin"), "index",
          "TypiClust's clusters, the least sure item inside each (typical at round 0)"),
    _spec("cluster_margin", _typical("ClusterMargin"), "probs index",
          "smallest margins, clustered, taken round-robin from the smallest cluster"),
    _spec("budget_switch", _budget_switch, "probs index",
          "one strategy while labels per class are few (typiclust), another after (margin)"),
    _spec("ask_llm", lambda ctx, **p: _top(_llm("AskLLM")(**_with_backend(ctx, p, "ask_llm"))), "pool backend",
          "the LM's P(yes) that an item is worth training on"),
    _spec("select_llm", lambda ctx, **p: _llm("SelectLLM")(**_with_backend(ctx, p, "select_llm")),
          "pool index backend", "the LM picks among k-means groups"),
    _spec("ifd", lambda ctx, **p: _top(_llm("IFD")(**_with_backend(ctx, p, "ifd"))), "pool backend",
          "instruction-following difficulty of prompt/response pairs, under the recipe's LM"),
    _spec("answer_entropy", _answer("entropy"), "responses", "mean token entropy of the learner's own answer"),
    _spec("answer_perplexity", _answer("perplexity"), "responses", "perplexity of the learner's own answer"),
    _spec("answer_semantic", _answer("semantic"), "responses", "disagreement among sampled answers (embedded)"),
    _spec("answer_loss", _answer("loss"), "responses", "the learner's loss on the reference response"),
    _spec("answer_ifd", _answer("ifd"), "responses", "the learner's instruction-following difficulty"),
    _spec("answer_entropy_kcenter", _answer("entropy", diverse=True), "responses index",
          "the answers the learner is least sure of, spread out by k-center"),
])
