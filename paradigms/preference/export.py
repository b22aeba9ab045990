"""Labelled pairs out as TRL datasets: paired (``prompt``/``chosen``/``rejected``: DPOTrainer,
RewardTrainer) or unpaired (``prompt``/``completion``/``label``: KTOTrainer), with provenance.

The only unprefixed columns are TRL's own, carrying exactly TRL's meaning; everything curate adds
is named ``curate_*``, a name no TRL trainer reads (TRL drops it with ``remove_unused_columns``):

* ``curate_pair_id``: the pool id of the pair;
* ``curate_judge``: who labelled it (``"llm"``, ``"human"``, ``"gold"``...), ``curate_confidence``,
  ``curate_round`` and ``curate_strategy`` (the round's acquisition strategy) from the journal;
* ``curate_margin``: curate's learner margin for the pair when it was exported (reward model or
  DPO implicit reward), oriented chosen-minus-rejected, or None. It is not TRL's ``margin``:
  ``RewardTrainer`` would subtract a column of that name inside its loss;
* ``curate_note``: the annotator's note.

Texts are the pool's as they are (an HH-RLHF prompt keeps its ``"\\n\\nAssistant:"`` marker, so
``prompt + chosen`` is the original transcript). Ties carry no preference and are left out (their
count is logged). The unpaired form has one row per side, as ``trl.data_utils.unpair_preference_dataset``
lays it out: every chosen response (``label`` True), then every rejected one (False).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import DataError
from curate.export import to_trl

from .pairs import chosen_rejected

__all__ = ["METADATA", "PREFIX", "journal_provenance", "kto_dataset", "preference_dataset"]

PREFIX = "curate_"
# curate's own columns, each saved as PREFIX + name, and their types.
METADATA = {"pair_id": "int64", "judge": "string", "confidence": "float64", "round": "int64",
            "strategy": "string", "margin": "float64", "note": "string"}

logger = logging.getLogger(__name__)


def journal_provenance(run_dir: str | Path) -> tuple[dict[int, Any], dict[int, dict[str, Any]]]:
    """Labels and their provenance (``judge``, ``confidence``, ``round``, ``strategy``, ``note``) from a
    loop's journal."""
    from curate.journal import Journal

    journal = Journal.of(run_dir)
    try:
        rows = journal.label_rows()
        strategies = {r.round: r.strategy for r in journal.rounds()}
    finally:
        journal.close()
    labels = {r["item_id"]: r["label"] for r in rows if r["label"] is not None}
    info = {r["item_id"]: {"judge": r["source"], "confidence": r["confidence"], "round": r["round"],
                           "strategy": strategies.get(r["round"]), "note": r["note"] or ""}
            for r in rows if r["label"] is not None}
    return labels, info


def _features(trl_columns: dict[str, str]):
    import datasets

    return datasets.Features({**{k: datasets.Value(v) for k, v in trl_columns.items()},
                              **{PREFIX + k: datasets.Value(v) for k, v in METADATA.items()}})


def _dataset(rows: list[dict[str, Any]], features):
    import datasets

    if rows:
        return datasets.Dataset.from_list(rows, features=features)
    return datasets.Dataset.from_dict({k: [] for k in features}, features=features)


def preference_dataset(pool, labels: Mapping[int, Any], *, provenance: Mapping[int, Mapping[str, Any]] | None = None,
                       margins: np.ndarray | None = None):
    """A ``datasets.Dataset`` in TRL's preference format, one row per labelled non-tie pair:
    ``prompt``, ``chosen``, ``rejected`` and the ``curate_*`` columns of the module docstring.

    Args:
        pool: the pair pool.
        labels: pool id -> "a" / "b" / "tie".
        provenance: pool id -> ``{"judge", "confidence", "round", "strategy", "note"}`` (e.g. from
            :func:`journal_provenance`); missing fields become None.
        margins: the learner's ``r(a) − r(b)`` for every pool id (``learner.margin()``), or None.
    """
    ids = np.array(sorted(labels), dtype=np.int64)
    rows = chosen_rejected(pool, ids, [labels[i] for i in ids.tolist()])
    ties = len(ids) - len(rows)
    if ties:
        logger.info("export: %d tie(s) left out of %d labelled pair(s)", ties, len(ids))
    provenance = provenance or {}
    out = []
    for row in rows:
        i = row["id"]
        info = provenance.get(i, {})
        margin = None
        if margins is not None:
            m = float(margins[i])
            margin = m if labels[i] == "a" else -m  # chosen minus rejected
        meta = {"pair_id": i, "judge": info.get("judge"), "confidence": info.get("confidence"),
                "round": info.get("round"), "strategy": info.get("strategy"), "margin": margin,
                "note": info.get("note", "")}
        out.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"],
                    **{PREFIX + k: v for k, v in meta.items()}})
    data = _dataset(out, _features({"prompt": "string", "chosen": "string", "rejected": "string"}))
    return to_trl(data, "preference")


def kto_dataset(preferences: Iterable[Mapping[str, Any]]):
    """TRL's unpaired preference format (KTOTrainer) from preference rows (:func:`preference_dataset`,
    or the file it was saved to, read back): ``prompt``, ``completion``, ``label`` (bool), two rows a
    pair, every chosen side first and then every rejected side, each with its pair's ``curate_*`` columns."""
    rows = list(preferences)
    for n, row in enumerate(rows):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise DataError(f"preference row {n}: missing {', '.join(missing)}; the unpaired export needs prompt, "
                            f"chosen and rejected. Found: {', '.join(sorted(row))}.")
    meta = [{PREFIX + k: row.get(PREFIX + k) for k in METADATA} for row in rows]
    out = [{"prompt": row["prompt"], "completion": row[side], "label": side == "chosen", **m}
           for side in ("chosen", "rejected") for row, m in zip(rows, meta, strict=True)]
    return _dataset(out, _features({"prompt": "string", "completion": "string", "label": "bool"}))
