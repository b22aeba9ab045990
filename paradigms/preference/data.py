"""Readers for public preference data, read in place (never copied): rows of
``prompt``/``chosen``/``rejected`` (and ``tie``) that :func:`pairs_from_preferences` turns into pairs.

* HH-RLHF (Anthropic): gzip JSONL of ``{"chosen": dialogue, "rejected": dialogue}``; the last
  assistant reply is the response and everything before it, up to and including its
  ``"\\n\\nAssistant:"`` marker, the prompt, byte for byte: ``prompt + chosen`` is the original
  transcript (TRL's own HH split), so a model trained on it sees every turn boundary. Human labels.
* AlpacaEval annotations: a JSON list with ``instruction``, ``output_1``, ``output_2`` and
  ``preference`` ("1" or 1: output_1 wins, "2": output_2 wins, "0" or 1.5: a draw). GPT-4 labels.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from curate.errors import DataError

__all__ = ["FORMATS", "load_pair_pool", "read_alpaca_eval", "read_hh_rlhf", "read_preferences"]

FORMATS = ("jsonl", "hh_rlhf", "alpaca_eval")

_HH_TURN = "\n\nAssistant:"


def _split_last_reply(text: str) -> tuple[str, str]:
    """(the transcript up to and including its last ``"\\n\\nAssistant:"``, the reply after it), unstripped.

    :func:`~curate.paradigms.preference.pairs.split_dialogue` strips both parts, which drops the
    marker and the newlines before it: a prompt cut that way, concatenated with its reply as
    DPOTrainer does, ran the last human turn into the reply with no turn boundary.
    """
    cut = text.rfind(_HH_TURN)
    if cut < 0:
        raise DataError(f"no {_HH_TURN!r} turn in the transcript {text[:80]!r}...; cannot split off the reply.")
    end = cut + len(_HH_TURN)
    return text[:end], text[end:]


def read_hh_rlhf(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an HH-RLHF file (``.jsonl.gz`` or ``.jsonl``), split as TRL splits them: ``prompt``
    ends with the last ``"\\n\\nAssistant:"`` and ``prompt + chosen`` (and ``prompt + rejected``) is
    the original transcript exactly; the replies keep their leading space. Pairs whose two dialogues
    do not share the conversation before the last reply (5 of 2,312 in harmless-base test) or have
    an empty reply (4 more) are left out."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows, skipped = [], 0
    with opener(path, "rt", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompt_c, chosen = _split_last_reply(record["chosen"])
                prompt_r, rejected = _split_last_reply(record["rejected"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(f"{path}:{lineno}: not an HH-RLHF row ({type(err).__name__}: {err}).") from None
            except DataError:
                skipped += 1
                continue
            empty = not chosen.strip() or not rejected.strip()
            if prompt_c != prompt_r or empty or chosen.strip() == rejected.strip():
                skipped += 1
                continue
            rows.append({"prompt": prompt_c, "chosen": chosen, "rejected": rejected, "tie": False, "source_line": lineno})
    if not rows:
        raise DataError(f"{path}: no usable HH-RLHF pairs ({skipped} skipped).")
    return rows


_ALPACA_WIN = {"1": 1, "1.0": 1, "2": 2, "2.0": 2, "0": 0, "0.0": 0, "1.5": 0}


def read_alpaca_eval(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an AlpacaEval ``annotations.json``; draws become ``tie: True`` rows (output_1 as
    "chosen" there, which the pair builder treats as unordered)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON: {err.msg}.") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of annotations, got {type(data).__name__}.")
    rows = []
    for n, record in enumerate(data):
        win = _ALPACA_WIN.get(str(record.get("preference")).strip())
        if win is None:
            raise DataError(f"{path}: annotation {n}: unknown preference {record.get('preference')!r} "
                            f"(expected one of {', '.join(sorted(_ALPACA_WIN))}).")
        one, two = record.get("output_1"), record.get("output_2")
        if not all(isinstance(v, str) and v.strip() for v in (record.get("instruction"), one, two)):
            raise DataError(f"{path}: annotation {n}: instruction, output_1 and output_2 must be non-empty strings.")
        chosen, rejected = (two, one) if win == 2 else (one, two)
        rows.append({"prompt": record["instruction"].strip(), "chosen": chosen.strip(), "rejected": rejected.strip(),
                     "tie": win == 0, "source_line": n})
    return rows


def read_preferences(path: str | Path, format: str = "jsonl") -> list[dict[str, Any]]:
    """Rows from ``path``: ``jsonl`` (fields prompt, chosen, rejected, optional tie), ``hh_rlhf`` or
    ``alpaca_eval``."""
    if format == "hh_rlhf":
        return read_hh_rlhf(path)
    if format == "alpaca_eval":
        return read_alpaca_eval(path)
    if format != "jsonl":
        from curate.errors import ConfigError, did_you_mean

        raise ConfigError(f"Unknown preference format '{format}'. Known: {', '.join(FORMATS)}.{did_you_mean(format, FORMATS)}")
    from curate.pool import load_pool

    pool = load_pool(str(path), require=("prompt", "chosen", "rejected"))
    ties = pool.column("tie") if "tie" in pool.columns else [False] * len(pool)
    return [{"prompt": p, "chosen": c, "rejected": r, "tie": bool(t)}
            for p, c, r, t in zip(pool.column("prompt"), pool.column("chosen"), pool.column("rejected"), ties, strict=True)]


def load_pair_pool(path: str | Path, format: str = "jsonl", *, seed: int = 0, offset: int = 0,
                   limit: int | None = None):
    """A pair pool from a file.

    ``jsonl``/``json``/``csv``... files (anything :func:`curate.pool.load_pool` reads) either hold
    preferences (``prompt``, ``chosen``, ``rejected``, optional ``tie``: gold labels, the chosen
    response at a position drawn from ``seed``) or pairs (``prompt``, ``response_a``, ``response_b``,
    optional ``label``). ``hh_rlhf`` and ``alpaca_eval`` read those datasets in place. ``offset``
    and ``limit`` keep rows ``offset .. offset + limit - 1`` (a pool and a held-out set from one file).
    """
    from .pairs import pair_pool, pairs_from_preferences

    if (limit is not None and limit < 1) or offset < 0:
        raise DataError(f"offset must be >= 0 and limit positive. Got offset={offset}, limit={limit} instead.")
    end = None if limit is None else offset + limit
    if format in ("hh_rlhf", "alpaca_eval"):
        return pairs_from_preferences(read_preferences(path, format)[offset:end], seed=seed)
    from curate.pool import load_pool

    fmt = None if format == "jsonl" else format
    pool = load_pool(str(path), format=fmt)
    columns = pool.columns
    if all(c in columns for c in ("prompt", "chosen", "rejected")):
        ties = pool.column("tie") if "tie" in columns else [False] * len(pool)
        rows = [{"prompt": p, "chosen": c, "rejected": r, "tie": bool(t)} for p, c, r, t in
                zip(pool.column("prompt"), pool.column("chosen"), pool.column("rejected"), ties, strict=True)]
        return pairs_from_preferences(rows[offset:end], seed=seed)
    if all(c in columns for c in ("prompt", "response_a", "response_b")):
        keep = [c for c in ("prompt", "response_a", "response_b", "label", "prompt_id") if c in columns]
        data = pool.dataset.select_columns(keep)
        rows = data.to_list()[offset:end]
        return pair_pool(rows)
    raise DataError(f"{path}: expected columns prompt/chosen/rejected (preferences) or prompt/response_a/response_b "
                    f"(pairs); found {', '.join(columns)}.")
