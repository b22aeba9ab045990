"""Labelled pairs out as TRL's ``prompt``/``chosen``/``rejected`` dataset, with provenance.

Every row keeps where its label came from: ``pair_id`` (the pool id), ``judge`` (who labelled:
``"llm"``, ``"human"``, ``"gold"``...), ``confidence``, ``round`` and ``margin`` (the learner's margin
for the pair when it was exported, oriented chosen-minus-rejected, or None), plus the annotator's
note. Ties carry no preference and are left out (their count is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from curate.export import to_trl

from .pairs import chosen_rejected

__all__ = ["journal_provenance", "preference_dataset"]

logger = logging.getLogger(__name__)


def journal_provenance(run_dir: str | Path) -> tuple[dict[int, Any], dict[int, dict[str, Any]]]:
    """Labels and their provenance (``judge``, ``confidence``, ``round``, ``note``) from a loop's journal."""
    from curate.journal import Journal

    journal = Journal.of(run_dir)
    try:
        rows = journal.label_rows()
    finally:
        journal.close()
    labels = {r["item_id"]: r["label"] for r in rows if r["label"] is not None}
    info = {r["item_id"]: {"judge": r["source"], "confidence": r["confidence"], "round": r["round"],
                           "note": r["note"] or ""} for r in rows if r["label"] is not None}
    return labels, info


def preference_dataset(pool, labels: Mapping[int, Any], *, provenance: Mapping[int, Mapping[str, Any]] | None = None,
                       margins: np.ndarray | None = None):
    """A ``datasets.Dataset`` in TRL's preference format, one row per labelled non-tie pair.

    Args:
        pool: the pair pool.
        labels: pool id -> "a" / "b" / "tie".
        provenance: pool id -> ``{"judge", "confidence", "round", "note"}`` (e.g. from
            :func:`journal_provenance`); missing fields become None.
        margins: the learner's ``r(a) − r(b)`` for every pool id (``learner.margin()``), or None.
    """
    import datasets

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
        out.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"], "pair_id": i,
                    "judge": info.get("judge"), "confidence": info.get("confidence"), "round": info.get("round"),
                    "margin": margin, "note": info.get("note", "")})
    features = datasets.Features({
        "prompt": datasets.Value("string"), "chosen": datasets.Value("string"), "rejected": datasets.Value("string"),
        "pair_id": datasets.Value("int64"), "judge": datasets.Value("string"), "confidence": datasets.Value("float64"),
        "round": datasets.Value("int64"), "margin": datasets.Value("float64"), "note": datasets.Value("string"),
    })
    data = datasets.Dataset.from_list(out, features=features) if out else datasets.Dataset.from_dict(
        {k: [] for k in features}, features=features)
    return to_trl(data, "preference")
