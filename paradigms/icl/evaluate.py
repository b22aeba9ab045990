"""The ICL evaluation harness: accuracy of an LM with chosen demonstrations on a labelled test set.

Each test input's prompt is scored by option log-probs (``scoring.score_options``: logits only at
the answer position, batched, heads shared by prompts with the same demonstrations). With
``calibrate``, the same demonstrations are scored once more with each content-free input ("N/A",
"", "[MASK]"); their mean option distribution ``p_cf`` estimates the prompt's bias, and contextual
calibration (Zhao et al. 2021) predicts ``argmax p / p_cf`` (``W = diag(p_cf)^-1``, ``b = 0``). The
content-free prompts share the demonstrations' head with the real one, so calibration costs a few
tokens per distinct demonstration set, not a second pass.

Two scopes are reported. ``prompt`` is Zhao et al.'s: each prompt is divided by the content-free
estimate of its own demonstrations. With per-input demonstrations (k-NN) that also divides out what
the demonstrations say: when the nearest examples all carry one label, "N/A" after them predicts that
label too, and calibration undoes the retrieval. ``dataset`` divides every prompt by the mean of
the content-free estimates over all demonstration sets: the bias of the template and the label
words, without cancelling each input's own demonstrations. With one demonstration set for every
input the two are the same.

Which of raw, ``prompt`` and ``dataset`` is *the* result is the config's choice
(``evaluate.primary``, default ``dataset`` when calibrating); :data:`CALIBRATION_MEANING` says in one
sentence what each is, and :func:`prediction_rows` gives the per-input outputs (gold, prediction,
every label's probability under each calibration, the demonstrations) from which every total and a
paired comparison of two evaluations can be recomputed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from curate.errors import ConfigError, DataError

from .prompts import Demo, Prompt, PromptBuilder
from .scoring import ScoringStats, score_options

__all__ = ["ACCURACY_KEYS", "CALIBRATION_MEANING", "ICLResult", "build_prompts", "contextual_calibration", "evaluate_icl",
           "evaluate_prompts", "mean_sd", "prediction_rows"]

logger = logging.getLogger(__name__)

# calibration -> the summary key of its accuracy (``ICLResult.summary``, ``curate icl eval --out``).
ACCURACY_KEYS = {"raw": "accuracy", "prompt": "calibrated_accuracy", "dataset": "dataset_calibrated_accuracy"}
CALIBRATION_MEANING = {
    "raw": "the argmax of the LM's option probabilities, uncalibrated",
    "prompt": "each prompt divided by the content-free estimate of its own demonstrations (Zhao et al. 2021); "
              "with per-input demonstrations this also cancels what they say",
    "dataset": "every prompt divided by the mean content-free estimate over all demonstration sets: the bias of "
               "the template and the label words only",
}


@dataclass(frozen=True)
class ICLResult:
    """Predictions and accuracy of one evaluation (``accuracy`` is None without gold labels)."""

    labels: list[str]                        # the label set, the columns of the probabilities
    probs: np.ndarray                        # (n, C) option probabilities
    predictions: list[str]
    accuracy: float | None
    calibrated_probs: np.ndarray | None = None
    calibrated_predictions: list[str] | None = None
    calibrated_accuracy: float | None = None
    dataset_calibrated_predictions: list[str] | None = None  # one content-free estimate for all prompts
    dataset_calibrated_accuracy: float | None = None
    dataset_calibrated_probs: np.ndarray | None = None
    content_free_probs: np.ndarray | None = None  # (n, C) each input's content-free estimate (its demonstrations)
    seconds: float = 0.0
    stats: ScoringStats = field(default_factory=ScoringStats)
    prompts: list[Prompt] = field(default_factory=list)

    @property
    def inputs_per_second(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def calibrations(self) -> tuple[str, ...]:
        """The calibrations computed: ``("raw",)``, or ``("raw", "prompt", "dataset")``."""
        return ("raw",) if self.calibrated_probs is None else ("raw", "prompt", "dataset")

    def _of(self, calibration: str, what: str):
        if calibration not in self.calibrations:
            raise ConfigError(f"No '{calibration}' {what}: this evaluation computed {', '.join(self.calibrations)} "
                              "(calibrate=True computes prompt and dataset).")
        return {"raw": {"probs": self.probs, "predictions": self.predictions, "accuracy": self.accuracy},
                "prompt": {"probs": self.calibrated_probs, "predictions": self.calibrated_predictions,
                           "accuracy": self.calibrated_accuracy},
                "dataset": {"probs": self.dataset_calibrated_probs, "predictions": self.dataset_calibrated_predictions,
                            "accuracy": self.dataset_calibrated_accuracy}}[calibration][what]

    def probs_of(self, calibration: str) -> np.ndarray:
        """``(n, C)`` option probabilities under ``calibration`` (``raw``, ``prompt`` or ``dataset``)."""
        return self._of(calibration, "probs")

    def predictions_of(self, calibration: str) -> list[str]:
        return self._of(calibration, "predictions")

    def accuracy_of(self, calibration: str) -> float | None:
        return self._of(calibration, "accuracy")

    def summary(self) -> dict:
        return {"n": len(self.predictions), "accuracy": self.accuracy, "calibrated_accuracy": self.calibrated_accuracy,
                "dataset_calibrated_accuracy": self.dataset_calibrated_accuracy,
                "seconds": round(self.seconds, 3), "inputs_per_second": round(self.inputs_per_second, 3),
                "prompts_scored": self.stats.prompts, "forward_tokens": self.stats.forward_tokens,
                "shared_tokens": self.stats.shared_tokens,
                "demonstrations_dropped": int(sum(p.dropped for p in self.prompts))}


def contextual_calibration(probs: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Zhao et al. (2021): ``q = normalise(p / p_cf)`` row by row (``p_cf`` broadcast when it is one row)."""
    probs = np.asarray(probs, dtype=np.float64)
    cf = np.broadcast_to(np.asarray(content_free, dtype=np.float64), probs.shape)
    if (cf <= 0).any():
        raise DataError("content-free probabilities must be positive to calibrate with.")
    q = probs / cf
    return q / q.sum(axis=1, keepdims=True)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def build_prompts(builder: PromptBuilder, texts: Sequence[str], demos: Sequence[Sequence[Demo]], *,
                  order: str = "similar_last", rng: np.random.Generator | None = None) -> list[Prompt]:
    """One fitted prompt per input (``demos[i]`` most relevant first)."""
    if len(texts) != len(demos):
        raise ConfigError(f"build_prompts needs one demonstration list per input; got {len(demos)} for {len(texts)}.")
    return [builder.fit(t, d, order=order, rng=rng) for t, d in zip(texts, demos, strict=True)]


def evaluate_prompts(backend, builder: PromptBuilder, prompts: Sequence[Prompt], gold: Sequence[str] | None = None, *,
                     calibrate: bool = True, content_free: Sequence[str] = ("N/A", "", "[MASK]"),
                     max_batch_tokens: int = 4096, max_batch_size: int = 16) -> ICLResult:
    """Score ``prompts`` (and their content-free twins when calibrating); accuracy against ``gold``."""
    if gold is not None and len(gold) != len(prompts):
        raise ConfigError(f"gold must have one label per prompt; got {len(gold)} for {len(prompts)}.")
    if calibrate and not content_free:
        raise ConfigError("calibrate=True needs at least one content-free input (e.g. 'N/A').")
    labels = builder.labels
    keys = [tuple(p.demo_ids) for p in prompts]
    texts = [p.text for p in prompts]
    cf_sets: dict[tuple, tuple[Demo, ...]] = {}
    if calibrate:
        for key, p in zip(keys, prompts, strict=True):
            cf_sets.setdefault(key, p.demos)
        for key, demos in cf_sets.items():
            for cf in content_free:
                texts.append(builder.render(cf, demos))
                keys.append(key)
    stats = ScoringStats()
    clock = time.perf_counter()
    logp = score_options(backend, texts, builder.options, groups=keys, max_batch_tokens=max_batch_tokens,
                         max_batch_size=max_batch_size, stats=stats)
    seconds = time.perf_counter() - clock
    probs = np.exp(logp[: len(prompts)])
    predictions = [labels[i] for i in probs.argmax(axis=1)]
    accuracy = _accuracy(predictions, gold)
    result = dict(labels=labels, probs=probs, predictions=predictions, accuracy=accuracy, seconds=seconds,
                  stats=stats, prompts=list(prompts))
    if calibrate:
        cf_probs = np.exp(logp[len(prompts):]).reshape(len(cf_sets), len(content_free), len(labels)).mean(axis=1)
        row_of = {key: r for r, key in enumerate(cf_sets)}
        per_input = cf_probs[[row_of[tuple(p.demo_ids)] for p in prompts]]
        calibrated = contextual_calibration(probs, per_input)
        cal_pred = [labels[i] for i in calibrated.argmax(axis=1)]
        whole = contextual_calibration(probs, per_input.mean(axis=0))
        whole_pred = [labels[i] for i in whole.argmax(axis=1)]
        result.update(calibrated_probs=calibrated, calibrated_predictions=cal_pred,
                      calibrated_accuracy=_accuracy(cal_pred, gold), dataset_calibrated_predictions=whole_pred,
                      dataset_calibrated_accuracy=_accuracy(whole_pred, gold), dataset_calibrated_probs=whole,
                      content_free_probs=per_input)
    logger.info("icl eval: %d inputs, %d prompts, %d forward tokens (%d shared) in %.1fs; accuracy %s / calibrated %s",
                len(prompts), stats.prompts, stats.forward_tokens, stats.shared_tokens, seconds,
                result["accuracy"], result.get("calibrated_accuracy"))
    return ICLResult(**result)


def _accuracy(predictions: list[str], gold: Sequence[str] | None) -> float | None:
    if gold is None:
        return None
    return float(np.mean([p == str(g) for p, g in zip(predictions, gold, strict=True)])) if predictions else float("nan")


def prediction_rows(result: ICLResult, gold: Sequence[str] | None, *, ids: Sequence | None = None,
                    primary: str = "raw", demo_keys: Sequence | None = None, **common) -> list[dict]:
    """One row per input, in input order: what it was shown and what the LM said.

    Each row: ``row`` (position in the test set), ``id`` (``ids[row]``, e.g. the test set's id
    column; default the position), ``label`` (gold; absent without gold), ``prediction`` and
    ``correct`` under ``primary``, ``predictions`` and ``probs`` (label -> probability) under every
    computed calibration, ``content_free`` (the estimate this input was calibrated by, when
    calibrating), ``demonstration_ids`` (pool ids, in prompt order; ``demonstration_keys`` when
    ``demo_keys`` maps pool ids to the pool's id column), ``dropped_demonstrations`` and
    ``input_cut``; ``common``
    (e.g. ``seed=0``) is put first in every row. The mean of ``correct`` (of ``predictions[c] ==
    label``) is exactly the result's (calibration ``c``'s) accuracy.
    """
    calibrations = result.calibrations
    if primary not in calibrations:
        raise ConfigError(f"primary must be one of the computed calibrations {calibrations}. Got '{primary}' instead.")
    n = len(result.predictions)
    ids = list(range(n)) if ids is None else list(ids)
    if len(ids) != n or (gold is not None and len(gold) != n):
        raise ConfigError(f"prediction_rows needs one id (and gold label) per input; got {len(ids)} ids and "
                          f"{None if gold is None else len(gold)} labels for {n} inputs.")
    labels = result.labels
    probs = {c: result.probs_of(c) for c in calibrations}
    preds = {c: result.predictions_of(c) for c in calibrations}
    rows = []
    for r in range(n):
        row = {**common, "row": r, "id": _plain(ids[r])}
        if gold is not None:
            row["label"] = str(gold[r])
        row["prediction"] = preds[primary][r]
        if gold is not None:
            row["correct"] = preds[primary][r] == str(gold[r])
        row["predictions"] = {c: preds[c][r] for c in calibrations}
        row["probs"] = {c: dict(zip(labels, map(float, probs[c][r]), strict=True)) for c in calibrations}
        if result.content_free_probs is not None:
            row["content_free"] = dict(zip(labels, map(float, result.content_free_probs[r]), strict=True))
        if result.prompts:
            prompt = result.prompts[r]
            row["demonstration_ids"] = [int(i) for i in prompt.demo_ids]
            if demo_keys is not None:
                row["demonstration_keys"] = [_plain(demo_keys[i]) for i in prompt.demo_ids]
            row["dropped_demonstrations"] = int(prompt.dropped)
            row["input_cut"] = bool(prompt.input_cut)
        rows.append(row)
    return rows


def _plain(value):
    """A JSON-ready scalar (numpy scalars to Python)."""
    return value.item() if isinstance(value, np.generic) else value


def evaluate_icl(backend, builder: PromptBuilder, retriever, texts: Sequence[str], gold: Sequence[str] | None,
                 vectors: np.ndarray | None, *, order: str = "similar_last", seed: int = 0, calibrate: bool = True,
                 content_free: Sequence[str] = ("N/A", "", "[MASK]"), max_batch_tokens: int = 4096,
                 max_batch_size: int = 16) -> ICLResult:
    """Retrieve demonstrations for each input, build the prompts, and evaluate them (one seed)."""
    rng = np.random.default_rng(seed)
    clock = time.perf_counter()
    demos = retriever.retrieve(vectors, query_texts=list(texts), rng=rng)
    prompts = build_prompts(builder, texts, demos, order=order, rng=rng)
    prepared = time.perf_counter() - clock
    result = evaluate_prompts(backend, builder, prompts, gold, calibrate=calibrate, content_free=content_free,
                              max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size)
    # Retrieval (and any perplexity re-ranking) is part of the cost of an input.
    return replace(result, seconds=result.seconds + prepared)
