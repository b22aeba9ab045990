"""Export to TRL's dataset formats, the real contract with its trainers, and the one way every
paradigm writes a run's data.

* ``messages``: ``[{"role": "user", ...}, {"role": "assistant", ...}]`` (SFTTrainer, conversational);
* ``prompt_completion``: ``prompt`` / ``completion`` columns (SFTTrainer, completion-only loss);
* ``preference``: ``prompt`` / ``chosen`` / ``rejected`` columns (DPOTrainer, RewardTrainer).

Columns other than the roles (provenance, scores, ids) are kept beside the TRL columns.

The output convention (:func:`save_run_data`, used by every paradigm's export): a ``train`` split
(the run's curated data) and, where the recipe has a held-out eval set, a ``test`` split (that set
in the same columns), saved by :func:`save_dataset`. For ``x.jsonl`` (the default of every
paradigm) that is ``x.jsonl`` (train, what ``load_dataset("json", data_files="x.jsonl")`` reads)
and ``x.test.jsonl`` beside it; ``x.parquet`` likewise; a path without a suffix is a
``DatasetDict.save_to_disk`` folder. Beside the data, ``README.md`` is a Hugging Face dataset card
(YAML header with the ``configs`` that ``load_dataset(folder)`` reads) naming the run folder,
paradigm, strategy, labels bought, money spent, budget, date and curate version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from curate.errors import ConfigError, DataError, did_you_mean

__all__ = ["CARD", "FORMATS", "run_facts", "save_dataset", "save_run_data", "split_paths", "to_trl", "write_card"]

logger = logging.getLogger(__name__)

FORMATS = ("messages", "prompt_completion", "preference")
_NEEDS = {
    "messages": ("prompt", "response"),
    "prompt_completion": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
}
CARD = "README.md"
# In every card curate writes: a README.md without it is someone else's and is never overwritten.
_MARK = "<!-- dataset card written by curate export; each export into this folder rewrites it -->"
_FILE_SUFFIXES = (".jsonl", ".parquet")


def to_trl(dataset: Any, format: str, *, system_prompt: str | None = None) -> Any:
    """Convert a role-named ``datasets.Dataset`` (or a :class:`~curate.pool.Pool`, or a
    ``DatasetDict``: every split) to a TRL format."""
    dataset = getattr(dataset, "dataset", dataset)
    if isinstance(dataset, Mapping):
        from datasets import DatasetDict

        return DatasetDict({name: to_trl(split, format, system_prompt=system_prompt) for name, split in dataset.items()})
    if format not in FORMATS:
        raise ConfigError(f"Unknown export format '{format}'. Known: {', '.join(FORMATS)}.{did_you_mean(format, FORMATS)}")
    missing = [c for c in _NEEDS[format] if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"Format '{format}' needs columns {', '.join(_NEEDS[format])}; missing {', '.join(missing)}. "
            f"Available columns: {', '.join(dataset.column_names)}."
        )
    if format == "prompt_completion":
        return dataset.rename_column("response", "completion")
    if format == "preference":
        return dataset
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def to_messages(row: dict) -> dict:
        return {"messages": head + [{"role": "user", "content": row["prompt"]},
                                    {"role": "assistant", "content": row["response"]}]}

    return dataset.map(to_messages, remove_columns=["prompt", "response"])


def split_paths(path: str | Path, splits: Sequence[str]) -> dict[str, Path]:
    """Where :func:`save_dataset` puts each split for a ``.jsonl`` / ``.parquet`` path: ``train`` at
    ``path`` itself, every other split ``s`` at ``<stem>.s<suffix>`` beside it."""
    path = Path(path)
    return {s: path if s == "train" else path.with_name(f"{path.stem}.{s}{path.suffix}") for s in splits}


def save_dataset(dataset: Any, path: str | Path) -> Path:
    """Write a Dataset (or a Pool, or a list of row dicts) as JSONL (``*.jsonl``), Parquet
    (``*.parquet``) or a ``save_to_disk`` folder (a path without a suffix).

    A ``DatasetDict`` (or any mapping of split name -> data) needs a ``train`` split for a file path:
    ``train`` goes to ``path`` and every other split beside it (:func:`split_paths`:
    ``x.jsonl``, ``x.test.jsonl``); a folder holds the whole ``DatasetDict``. Returns ``path``.
    """
    dataset = getattr(dataset, "dataset", dataset)
    path = Path(path)
    if path.suffix not in (*_FILE_SUFFIXES, ""):
        raise ConfigError(f"Cannot save to '{path}': use a .jsonl or .parquet file, or a folder name without suffix.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(dataset, Mapping):
        splits = {name: getattr(part, "dataset", part) for name, part in dataset.items()}
        if path.suffix == "":
            from datasets import DatasetDict

            DatasetDict({name: _as_dataset(part) for name, part in splits.items()}).save_to_disk(str(path))
            return path
        if "train" not in splits:
            raise DataError(f"Cannot save splits {', '.join(splits) or '(none)'} to '{path}': one file per split "
                            f"needs a 'train' split (saved at {path.name}, the others as {path.stem}.<split>"
                            f"{path.suffix}). Rename a split to 'train', or save to a folder (no suffix).")
        for name, where in split_paths(path, list(splits)).items():
            save_dataset(splits[name], where)
        return path
    if path.suffix == ".jsonl":
        if isinstance(dataset, list):
            from curate.jsonl import write_text_atomic

            # default=str: a pool row may hold values JSON has no type for (dates, decimals)
            write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in dataset))
        else:
            dataset.to_json(str(path), lines=True, force_ascii=False)
    elif path.suffix == ".parquet":
        _as_dataset(dataset).to_parquet(str(path))
    else:
        _as_dataset(dataset).save_to_disk(str(path))
    return path


def _as_dataset(data: Any):
    """A ``datasets.Dataset`` of ``data`` (a Dataset, or row dicts: every key of every row a column)."""
    if not isinstance(data, list):
        return data
    from datasets import Dataset

    names = list(dict.fromkeys(k for row in data for k in row))
    return Dataset.from_dict({k: [row.get(k) for row in data] for k in names})


def run_facts(run_dir: str | Path) -> dict[str, Any]:
    """What a run's journal says for its card: rounds journalled, labels bought, money spent."""
    from curate.journal import Journal

    journal = Journal.of(run_dir)
    try:
        rounds = journal.rounds()
        labels = sum(1 for r in journal.label_rows() if r["label"] is not None)
        spent = sum(c.micros for c in journal.charges()) / 1e6
    finally:
        journal.close()
    return {"rounds": len(rounds), "labels": labels, "spent": spent}


def save_run_data(data: Any, path: str | Path, *, run_dir: str | Path, paradigm: str, test: Any = None,
                  strategy: str | None = None, budget: Mapping[str, Any] | None = None, currency: str = "USD",
                  what: str = "labels") -> Path:
    """A run's export the way every paradigm writes it (module docstring): ``data`` as the ``train``
    split, ``test`` (held-out rows in the same columns, or None) as the ``test`` split, through
    :func:`save_dataset`, and the dataset card beside them (:func:`write_card`). Returns ``path``."""
    splits = {"train": data}
    if test is not None and len(test):
        splits["test"] = test
    save_dataset(splits, path)
    write_card(path, {name: len(part) for name, part in splits.items()}, run_dir=run_dir, paradigm=paradigm,
               strategy=strategy, budget=budget, currency=currency, what=what)
    return Path(path)


def write_card(path: str | Path, rows: Mapping[str, int], *, run_dir: str | Path, paradigm: str,
               strategy: str | None = None, budget: Mapping[str, Any] | None = None, currency: str = "USD",
               what: str = "labels") -> Path | None:
    """The Hugging Face dataset card (``README.md``: YAML header, then Markdown) of the data saved at
    ``path`` (a file: the card beside it; a folder: inside it), ``rows`` per split. A README.md there
    that curate did not write is left alone (a warning says so); returns the card's path or None."""
    import yaml

    import curate
    from curate.jsonl import write_text_atomic

    path = Path(path)
    card = path / CARD if path.suffix == "" else path.parent / CARD
    if card.exists() and _MARK not in card.read_text(encoding="utf-8", errors="replace"):
        logger.warning("export: %s exists and was not written by curate; no dataset card written", card)
        return None
    facts = run_facts(run_dir)
    budget = {k: v for k, v in (budget or {}).items() if v is not None}
    meta = {"run": str(Path(run_dir).resolve()), "paradigm": paradigm, "strategy": strategy, what: facts["labels"],
            "rounds": facts["rounds"], "spent": round(facts["spent"], 6), "currency": currency, "budget": budget,
            "rows": dict(rows), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "curate_version": curate.__version__}
    header: dict[str, Any] = {}
    files = {}
    if path.suffix in _FILE_SUFFIXES:
        files = {s: p.name for s, p in split_paths(path, list(rows)).items()}
        header["configs"] = [{"config_name": "default",
                              "data_files": [{"split": s, "path": f} for s, f in files.items()]}]
    header.update(tags=["curate", "active-learning", paradigm], curate=meta)
    money = ", ".join(f"{k} {v:g} {currency}" if k == "money" else f"{k} {v}" for k, v in budget.items()) or "none"
    table = [("run folder", f"`{meta['run']}`"), ("paradigm", paradigm), ("strategy", strategy or "?"),
             (what, str(facts["labels"])), ("rounds", str(facts["rounds"])),
             ("money spent", f"{facts['spent']:.4f} {currency}"), ("budget", money),
             ("rows", ", ".join(f"{s} {n}" for s, n in rows.items())), ("date", meta["date"]),
             ("curate version", curate.__version__)]
    if path.suffix == ".jsonl":
        load = f'load_dataset("json", data_files={files!r})'
    elif path.suffix == ".parquet":
        load = f'load_dataset("parquet", data_files={files!r})'
    else:
        load = f'load_from_disk("{path.name}")'
    text = "".join([
        "---\n", yaml.safe_dump(header, sort_keys=False, allow_unicode=True), "---\n", _MARK, "\n\n",
        f"# {path.name}: the data of a curate {paradigm} run\n\n",
        f"Chosen by active learning with curate (strategy: {strategy or 'not recorded'}). "
        "The `train` split is the run's data" + (", `test` the recipe's held-out eval set" if "test" in rows else "")
        + ", in TRL's column format where one applies.\n\n",
        "| | |\n|---|---|\n", *(f"| {k} | {v} |\n" for k, v in table),
        "\n```python\nfrom datasets import " + ("load_from_disk" if path.suffix == "" else "load_dataset")
        + f"\n\ndata = {load}\n```\n",
    ])
    return write_text_atomic(card, text)
