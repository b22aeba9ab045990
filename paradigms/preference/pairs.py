"""Pair pools: the rows an active preference loop chooses among.

A pair is one pool row with a ``prompt`` and two responses, ``response_a`` and ``response_b``,
unordered until someone labels it. Its label says which response is preferred: ``"a"``, ``"b"``
or ``"tie"``. Pairs come from existing preference data (``chosen``/``rejected``, where the chosen
response is put at a seeded random position so that "a" is not always right) or from responses
sampled from a policy (:mod:`curate.paradigms.preference.candidates`).

Every pair pool also has a ``text`` column that shows the whole pair to a person (the human queue
exports it) and a ``prompt_id`` that groups the pairs built from one prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from curate.errors import ConfigError, DataError

__all__ = ["LABELS", "chosen_rejected", "check_pair_labels", "pair_pool", "pair_text", "pairs_from_preferences",
           "split_dialogue"]

LABELS = ("a", "b", "tie")
_NEEDS = ("prompt", "response_a", "response_b")


def pair_text(prompt: str, response_a: str, response_b: str) -> str:
    """How a pair is shown to a person (and what the human queue exports)."""
    return (f"Prompt:\n{prompt}\n\nResponse A:\n{response_a}\n\nResponse B:\n{response_b}\n\n"
            "Which response is better: a, b, or tie?")


def split_dialogue(text: str, marker: str = "\n\nAssistant:") -> tuple[str, str]:
    """Split a transcript at its last ``marker``: (the conversation before it, the last reply).

    HH-RLHF stores each side of a pair as a whole dialogue that differs only in the last assistant
    turn, so the prompt is everything before that turn.
    """
    cut = text.rfind(marker)
    if cut < 0:
        raise DataError(f"no {marker!r} turn in the transcript {text[:80]!r}...; cannot split off the reply.")
    return text[:cut].strip(), text[cut + len(marker):].strip()


def check_pair_labels(labels: Sequence[Any], who: str) -> None:
    bad = sorted({repr(v) for v in labels if v not in LABELS})
    if bad:
        raise ConfigError(f"{who} takes pair labels {', '.join(LABELS)}; got {', '.join(bad[:5])}.")


def pair_pool(rows: Sequence[Mapping[str, Any]]):
    """A :class:`~curate.pool.Pool` of pairs from dicts with ``prompt``, ``response_a``, ``response_b``
    (and optionally ``label``, ``prompt_id`` and any provenance columns, kept as they are)."""
    from curate.pool import load_pool

    if not rows:
        raise DataError("A pair pool needs at least one pair; got none.")
    out = []
    for n, row in enumerate(rows):
        missing = [k for k in _NEEDS if k not in row]
        if missing:
            raise DataError(f"pair {n}: missing {', '.join(missing)}; a pair needs {', '.join(_NEEDS)}. "
                            f"Found: {', '.join(sorted(row))}.")
        record = dict(row)
        record.setdefault("prompt_id", n)
        record["text"] = pair_text(row["prompt"], row["response_a"], row["response_b"])
        out.append(record)
    if "label" in out[0]:
        check_pair_labels([r["label"] for r in out], "pair_pool")
    return load_pool(out, columns={"text": "text", "prompt": "prompt", **({"label": "label"} if "label" in out[0] else {})})


def pairs_from_preferences(rows: Sequence[Mapping[str, Any]], *, seed: int = 0, keep: Sequence[str] = ()):
    """A pair pool from ``prompt``/``chosen``/``rejected`` rows, with the gold label in ``label``.

    The chosen response goes to position a or b by a coin flip from ``seed``, so the gold label is
    "a" about half of the time. A row with ``tie: True`` is labelled "tie". ``keep`` names extra
    columns to carry over (a source id, a split name).
    """
    rng = np.random.default_rng(seed)
    flips = rng.random(len(rows)) < 0.5
    out = []
    for n, (row, flip) in enumerate(zip(rows, flips, strict=True)):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"preference row {n}: field '{key}' must be a non-empty string; got {row.get(key)!r}.")
        a, b = (row["rejected"], row["chosen"]) if flip else (row["chosen"], row["rejected"])
        label = "tie" if row.get("tie") else ("b" if flip else "a")
        out.append({"prompt": row["prompt"], "response_a": a, "response_b": b, "label": label, "prompt_id": n,
                    **{k: row[k] for k in keep}})
    return pair_pool(out)


def chosen_rejected(pool, ids: Sequence[int] | np.ndarray, labels: Sequence[Any]) -> list[dict[str, Any]]:
    """``prompt``/``chosen``/``rejected`` dicts for labelled pairs; ties (and None) are left out,
    since a tie says nothing about which response to prefer."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != len(labels):
        raise ConfigError(f"chosen_rejected got {len(ids)} ids but {len(labels)} labels.")
    check_pair_labels([v for v in labels if v is not None], "chosen_rejected")
    keep = [(int(i), v) for i, v in zip(ids.tolist(), labels, strict=True) if v in ("a", "b")]
    if not keep:
        return []
    rows = pool.select([i for i, _ in keep])
    out = []
    for (i, v), p, a, b in zip(keep, rows["prompt"], rows["response_a"], rows["response_b"], strict=True):
        chosen, rejected = (a, b) if v == "a" else (b, a)
        out.append({"id": i, "prompt": p, "chosen": chosen, "rejected": rejected})
    return out
