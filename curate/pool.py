"""Pools: the unlabelled (and partly labelled) examples a loop chooses from.

``load_pool`` reads JSONL, JSON, CSV/TSV, Parquet, a saved ``datasets`` folder or a hub dataset
into a :class:`Pool`: a ``datasets.Dataset`` with a stable int64 ``id`` per row and its columns
renamed to curate's roles (text / label / prompt / response / chosen / rejected). Text formats are
parsed here, not by ``datasets``, so that a bad row is reported with its file, line and field.
Input files are only ever read.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError, DataError, did_you_mean

__all__ = ["ROLES", "Pool", "load_pool"]

ROLES = ("text", "label", "prompt", "response", "chosen", "rejected")
# Source columns a role is taken from when no mapping names one, in order of preference.
_ROLE_DEFAULTS: dict[str, tuple[str, ...]] = {
    "text": ("text", "sentence"),
    "label": ("label",),
    "prompt": ("prompt", "instruction"),
    "response": ("response", "completion", "output"),
    "chosen": ("chosen",),
    "rejected": ("rejected",),
}
_TEXT_ROLES = ("text", "prompt", "response", "chosen", "rejected")
_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "arrow", "hub")


@dataclass(frozen=True)
class Pool:
    """A dataset with a unique int64 ``id`` column and role-named columns.

    ``ids`` are row ids, stable for the same input; ``key`` keeps a source id column when one was
    named. The pool never changes in place: label state lives in the loop, not here.
    """

    dataset: Any  # datasets.Dataset
    source: str
    roles: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.dataset["id"], dtype=np.int64)

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.column_names)

    def column(self, name: str) -> list[Any]:
        if name not in self.dataset.column_names:
            raise ConfigError(
                f"Pool from {self.source} has no column '{name}'. "
                f"Available columns: {', '.join(self.dataset.column_names)}.{did_you_mean(name, self.dataset.column_names)}"
            )
        return self.dataset[name]

    def texts(self, ids: Sequence[int] | np.ndarray | None = None) -> list[str]:
        """The text that represents each row: ``text``, else ``prompt`` (+ ``response``)."""
        rows = self.dataset if ids is None else self.dataset.select(self.positions(ids))
        if "text" in self.roles:
            return list(rows["text"])
        if "prompt" in self.roles:
            prompts = rows["prompt"]
            if "response" in self.roles:
                return [f"{p}\n{r}" for p, r in zip(prompts, rows["response"], strict=True)]
            return list(prompts)
        raise ConfigError(
            f"Pool from {self.source} has neither a 'text' nor a 'prompt' role; map one with "
            f"columns={{'text': ...}}. Available columns: {', '.join(self.columns)}."
        )

    def positions(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row positions of the given ids (ids are row positions here; this also validates them)."""
        ids = np.asarray(ids, dtype=np.int64)
        bad = ids[(ids < 0) | (ids >= len(self))]
        if bad.size:
            raise ConfigError(f"ids {bad[:5].tolist()} are not in the pool (valid: 0..{len(self) - 1}).")
        return ids

    def select(self, ids: Sequence[int] | np.ndarray):
        """The rows with these ids, in this order, as a ``datasets.Dataset``."""
        return self.dataset.select(self.positions(ids))

    def extended(self, rows: Sequence[Mapping[str, Any]]) -> Pool:
        """A new pool: these rows appended, with the next ids (generated examples joining a run).

        Each row gives role values (``text``, ``prompt``...); columns a row does not give are
        None. The pool itself is not changed.
        """
        from datasets import Dataset, concatenate_datasets

        if not rows:
            return self
        names = self.dataset.column_names
        start = len(self)
        records = []
        for k, row in enumerate(rows):
            unknown = sorted(set(row) - set(names))
            if unknown:
                raise DataError(f"new pool row {k}: columns {unknown} are not in the pool from {self.source} "
                                f"(columns: {', '.join(names)}).")
            for role in _TEXT_ROLES:
                if role in self.roles and not (isinstance(row.get(role), str) and row[role].strip()):
                    raise DataError(f"new pool row {k}: the '{role}' role must be a non-empty string, got {row.get(role)!r}.")
            records.append({name: row.get(name) for name in names} | {"id": start + k})
        added = Dataset.from_list(records, features=self.dataset.features)
        return Pool(dataset=concatenate_datasets([self.dataset, added]), source=self.source, roles=self.roles)


def load_pool(
    source: str | Path | Any,
    *,
    columns: Mapping[str, str] | None = None,
    id_column: str | None = None,
    format: str | None = None,
    split: str = "train",
    require: Sequence[str] = (),
) -> Pool:
    """Load a pool from a file, a saved ``datasets`` folder, a hub name, or an in-memory Dataset/list.

    Args:
        source: a path (``.jsonl``, ``.json``, ``.csv``, ``.tsv``, ``.parquet``), a folder written by
            ``Dataset.save_to_disk``, a hub dataset name, a ``datasets.Dataset``, a list of dicts, or
            ``"sample:reviews"`` / ``"sample:reviews-test"`` (data curate ships).
        columns: role -> source column, e.g. ``{"text": "sentence"}``. Roles not named are taken from
            columns with their usual names (``text``/``sentence``, ``label``, ``prompt``/``instruction``,
            ``response``/``completion``/``output``, ``chosen``, ``rejected``) when present.
        id_column: a source column of unique ids, kept as ``key``; duplicates are an error.
        format: force a format instead of guessing it from the suffix.
        split: the split of a hub dataset or a saved ``DatasetDict``.
        require: roles that must be present (e.g. ``("text", "label")``).
    """
    dataset, where = _read_any(source, format=format, split=split)
    return _make_pool(dataset, where, columns or {}, id_column, tuple(require))


# --------------------------------------------------------------------------------------------
# reading


def _read_any(source: Any, *, format: str | None, split: str) -> tuple[Any, str]:
    import datasets

    if isinstance(source, datasets.Dataset):
        return source, "<Dataset>"
    if isinstance(source, list):
        return _from_records(source, "<list>"), "<list>"
    if isinstance(source, str) and source.startswith("sample:"):
        from curate.data import sample_path

        source = sample_path(source)
    if format is not None and format not in _FORMATS:
        raise ConfigError(f"Unknown pool format '{format}'. Known: {', '.join(_FORMATS)}.{did_you_mean(format, _FORMATS)}")
    path = Path(str(source))
    if format == "hub" or (format is None and not path.exists()):
        return _read_hub(str(source), split), str(source)
    if path.is_dir():
        return _read_saved(path, split), str(path)
    fmt = format or _guess_format(path)
    readers = {
        "jsonl": _read_jsonl,
        "json": _read_json,
        "csv": lambda p: _read_delimited(p, ","),
        "tsv": lambda p: _read_delimited(p, "\t"),
        "parquet": _read_parquet,
        "arrow": _read_parquet,
    }
    return readers[fmt](path), str(path)


def _guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        raise DataError(f"{path}: compressed files are not read directly; decompress it first (gunzip).")
    mapping = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
               ".parquet": "parquet", ".pq": "parquet"}
    suffix = suffixes[-1] if suffixes else ""
    if suffix not in mapping:
        raise DataError(
            f"{path}: cannot tell the format from the suffix '{suffix}'. "
            f"Use one of {', '.join(sorted(mapping))} or pass format= (one of {', '.join(_FORMATS)})."
        )
    return mapping[suffix]


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}). "
            "Re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
        ) from None
    return text.removeprefix("\ufeff")  # a BOM from spreadsheet exports is not part of the data


def _read_jsonl(path: Path):
    records = []
    for lineno, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON at column {err.colno}: {err.msg}.") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}.")
        records.append((lineno, record))
    return _from_records(records, str(path), numbered=True)


def _read_json(path: Path):
    try:
        data = json.loads(_decode(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON at column {err.colno}: {err.msg}.") from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(
                f"{path}: expected a JSON array of objects, or an object with exactly one list "
                f"(e.g. {{\"data\": [...]}}); found list keys {lists}."
            )
        data = data[lists[0]]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}.")
    return _from_records(data, str(path))


def _read_delimited(path: Path, delimiter: str):
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty (no header row).") from None
    if len(set(header)) != len(header) or any(not h.strip() for h in header):
        raise DataError(f"{path}:1: the header must name every column once; got {header}.")
    records = []
    for row in reader:
        lineno = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(
                f"{path}:{lineno}: expected {len(header)} fields ({', '.join(header)}), got {len(row)}. "
                "Check quoting of delimiters inside fields."
            )
        records.append((lineno, dict(zip(header, row, strict=True))))
    return _from_records(records, str(path), numbered=True)


def _read_parquet(path: Path):
    import datasets

    try:
        return datasets.Dataset.from_parquet(str(path))
    except Exception as err:  # pyarrow raises many types; report them in one place
        raise DataError(f"{path}: could not read as Parquet: {err}") from None


def _read_saved(path: Path, split: str):
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as err:
        raise DataError(f"{path}: not a folder written by Dataset.save_to_disk ({err}).") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ConfigError(f"{path}: no split '{split}'. Available splits: {', '.join(data)}.")
        data = data[split]
    return data


def _read_hub(name: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except Exception as err:
        raise DataError(
            f"'{name}' is neither an existing file or folder nor a loadable hub dataset ({type(err).__name__}: {err})."
        ) from None


def _from_records(records: list, where: str, numbered: bool = False):
    """Build a Dataset from dicts, checking that every row has the same fields with one type each."""
    import datasets

    if not numbered:
        records = [(i + 1, r) for i, r in enumerate(records)]

    def at(n: int) -> str:
        return f"{where}:{n}" if numbered else f"{where}: row {n}"

    if not records:
        raise DataError(f"{where}: the pool is empty (no rows).")
    for n, record in records:
        if not isinstance(record, dict):
            raise DataError(f"{at(n)}: expected an object, got {type(record).__name__}.")
    fields = list(records[0][1])
    kinds: dict[str, tuple[type, int]] = {}
    for n, record in records:
        if list(record) != fields and set(record) != set(fields):
            missing = sorted(set(fields) - set(record))
            extra = sorted(set(record) - set(fields))
            raise DataError(
                f"{at(n)}: fields differ from the first row "
                f"(missing {missing}, unexpected {extra})."
            )
        for key, value in record.items():
            if value is None:
                continue
            kind = float if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value)
            seen = kinds.setdefault(key, (kind, n))
            if seen[0] is not kind:
                raise DataError(
                    f"{at(n)}: field '{key}' is {type(value).__name__}, but it was "
                    f"{seen[0].__name__} at {at(seen[1])}."
                )
    rows = {key: [r[key] for _, r in records] for key in fields}
    dataset = datasets.Dataset.from_dict(rows)
    # Keep the original line numbers so later checks (types, empties) can name them.
    return dataset.add_column("_line", [n for n, _ in records]) if numbered else dataset


# --------------------------------------------------------------------------------------------
# roles and checks


def _make_pool(dataset, where: str, columns: Mapping[str, str], id_column: str | None, require: tuple[str, ...]):
    lines = dataset["_line"] if "_line" in dataset.column_names else None
    if lines is not None:
        dataset = dataset.remove_columns("_line")
    available = dataset.column_names
    if len(dataset) == 0:
        raise DataError(f"{where}: the pool is empty (no rows).")
    for role in columns:
        if role not in ROLES:
            raise ConfigError(f"Unknown role '{role}' in columns. Roles: {', '.join(ROLES)}.{did_you_mean(role, ROLES)}")
    mapping: dict[str, str] = {}
    for role in ROLES:
        if role in columns:
            name = columns[role]
            if name not in available:
                raise DataError(
                    f"{where}: column '{name}' (mapped to role '{role}') does not exist. "
                    f"Available columns: {', '.join(available)}.{did_you_mean(name, available)}"
                )
            mapping[role] = name
        else:
            found = next((c for c in _ROLE_DEFAULTS[role] if c in available and c not in mapping.values()), None)
            if found is not None:
                mapping[role] = found
    for role in require:
        if role not in mapping:
            raise DataError(
                f"{where}: no column for the required role '{role}'. Available columns: {', '.join(available)}. "
                f"Map one with columns={{'{role}': '<column>'}}."
            )
    if not mapping:
        raise DataError(
            f"{where}: no column matches any role ({', '.join(ROLES)}). Available columns: {', '.join(available)}. "
            "Pass columns={'text': '<column>'}."
        )

    def row_name(i: int) -> str:
        return f"{where}:{lines[i]}" if lines is not None else f"{where}: row {i + 1}"

    for role, name in mapping.items():
        values = dataset[name]
        for i, value in enumerate(values):
            if role in _TEXT_ROLES and not isinstance(value, str):
                raise DataError(f"{row_name(i)}: field '{name}' ({role}) must be a string, got {value!r}.")
            if role in _TEXT_ROLES and not value.strip():
                raise DataError(f"{row_name(i)}: field '{name}' ({role}) is empty.")
            if role == "label" and (value is None or isinstance(value, (dict, list))):
                raise DataError(f"{row_name(i)}: field '{name}' (label) must be a string or a number, got {value!r}.")

    key = None
    if id_column is not None:
        if id_column not in available:
            raise DataError(
                f"{where}: id column '{id_column}' does not exist. Available columns: {', '.join(available)}."
                f"{did_you_mean(id_column, available)}"
            )
        key = dataset[id_column]
        seen: dict[Any, int] = {}
        for i, value in enumerate(key):
            if value in seen:
                raise DataError(
                    f"{row_name(i)}: duplicate id {value!r} in column '{id_column}' (first at {row_name(seen[value])})."
                )
            seen[value] = i

    renames = {src: role for role, src in mapping.items() if src != role}
    # A source column already named like a role it does not fill would collide with the rename.
    clashes = [c for c in renames.values() if c in available and c not in renames]
    if clashes:
        dataset = dataset.rename_columns({c: f"{c}_original" for c in clashes})
    dataset = dataset.rename_columns(renames)
    if "id" in dataset.column_names:
        dataset = dataset.rename_column("id", "id_original")
    dataset = dataset.add_column("id", np.arange(len(dataset), dtype=np.int64).tolist())
    if key is not None:
        dataset = dataset.add_column("key", key)
    return Pool(dataset=dataset, source=where, roles=tuple(r for r in ROLES if r in mapping))
