"""Pools: the unlabelled (and partly labelled) examples a loop chooses from.

``load_pool`` reads JSONL, JSON, CSV/TSV, Parquet, ``<label> <text>`` line files, a saved ``datasets``
folder, a hub dataset asked for by name (``hf:NAME``) or data in memory (Dataset, DatasetDict,
IterableDataset, pandas DataFrame, list of dicts) into a :class:`Pool`: a ``datasets.Dataset`` with a stable int64 ``id`` per row and its columns
renamed to curate's roles (text / label / prompt / response / chosen / rejected). Text formats are
parsed here, not by ``datasets``, so that a bad row is reported with its file, line and field.
Input files are only ever read.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError, DataError, did_you_mean
from curate.jsonl import check_regular_file, decode_utf8, read_jsonl, split_lines

__all__ = ["HUB_PREFIX", "MAX_ITERABLE_ROWS", "ROLES", "Pool", "load_pool"]

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
_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "arrow", "lines", "hub")


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
    """Load a pool from a file, a saved ``datasets`` folder, a hub dataset, or data in memory.

    Args:
        source: one of

            * a path to a file (``.jsonl``/``.ndjson``, ``.json``, ``.csv``, ``.tsv``, ``.parquet``;
              other suffixes need ``format``) or to a folder written by ``Dataset.save_to_disk``;
            * ``"hf:NAME"`` (e.g. ``"hf:stanfordnlp/sst2"``): a hub dataset, loaded by
              ``datasets.load_dataset(NAME, split=split)``. A hub dataset is used only when asked for
              this way (or with ``format="hub"``): a path that does not exist is a "no such file"
              error, never a silent hub look-up;
            * ``"sample:reviews"`` / ``"sample:reviews-test"`` / ``"sample:instructions"`` ... (data
              curate ships);
            * in memory: a ``datasets.Dataset``, a ``DatasetDict`` (the ``split``), an
              ``IterableDataset`` / ``IterableDatasetDict`` (materialised, at most
              :data:`MAX_ITERABLE_ROWS` rows), a pandas ``DataFrame``, a list of dicts, or a dict of
              equal-length lists.
        columns: role -> source column, e.g. ``{"text": "sentence"}``. Roles not named are taken from
            columns with their usual names (``text``/``sentence``, ``label``, ``prompt``/``instruction``,
            ``response``/``completion``/``output``, ``chosen``, ``rejected``) when present. Other
            columns are kept under their own names.
        id_column: a source column of unique ids, kept as ``key``; duplicates are an error.
        format: read a file as this format instead of guessing it from the suffix: ``jsonl``,
            ``json``, ``csv``, ``tsv``, ``parquet``, ``lines`` or ``hub``. ``lines`` is one example
            per line, ``<label> <text>`` (SST-2's ``stsa.binary.*``, TREC's ``train.txt``): the label
            is the first word and the text the rest of the line, split at the first run of spaces or
            tabs. Options after a colon, comma-separated: ``label_first`` (the default),
            ``label_last`` (``<text> <label>``), ``no_label`` (the whole line is the text), and the
            separator ``tab`` or ``space`` (only that character separates), e.g. ``"lines:tab"`` or
            ``"lines:label_last,tab"``.
        split: the split of a hub dataset, a saved ``DatasetDict`` or an in-memory ``DatasetDict``.
        require: roles that must be present (e.g. ``("text", "label")``).
    """
    dataset, where = _read_any(source, format=format, split=split)
    return _make_pool(dataset, where, columns or {}, id_column, tuple(require))


# --------------------------------------------------------------------------------------------
# reading

HUB_PREFIX = "hf:"
MAX_ITERABLE_ROWS = 1_000_000  # an IterableDataset is read into memory up to this many rows
_LINE_OPTIONS = ("label_first", "label_last", "no_label", "tab", "space")


@dataclass(frozen=True)
class _LinesFormat:
    label: str | None = "first"  # "first", "last" or None (no label)
    separator: str | None = None  # None: a run of spaces or tabs


def _parse_format(format: str | None) -> tuple[str | None, _LinesFormat]:
    if format is None:
        return None, _LinesFormat()
    if not isinstance(format, str):
        raise ConfigError(f"The 'format' parameter of load_pool must be a string. Got {format!r} instead.")
    name, _, options = format.strip().partition(":")
    name = name.strip().lower()
    if name not in _FORMATS:
        raise ConfigError(f"Unknown pool format '{format}'. Known: {', '.join(_FORMATS)}.{did_you_mean(name, _FORMATS)}")
    opts = [o.strip() for o in options.split(",") if o.strip()]
    if opts and name != "lines":
        raise ConfigError(f"Pool format '{name}' takes no options; got '{format}'. Only 'lines' does "
                          f"({', '.join(_LINE_OPTIONS)}).")
    label, separator = "first", None
    for opt in opts:
        if opt not in _LINE_OPTIONS:
            raise ConfigError(f"Unknown option '{opt}' of pool format 'lines'. Known: {', '.join(_LINE_OPTIONS)}."
                              f"{did_you_mean(opt, _LINE_OPTIONS)}")
        if opt in ("label_first", "label_last", "no_label"):
            label = {"label_first": "first", "label_last": "last", "no_label": None}[opt]
        else:
            separator = "\t" if opt == "tab" else " "
    return name, _LinesFormat(label, separator)


def _read_any(source: Any, *, format: str | None, split: str) -> tuple[Any, str]:
    fmt, lines = _parse_format(format)
    in_memory = _read_memory(source, split)
    if in_memory is not None:
        if fmt is not None:
            raise ConfigError(f"format='{format}' is for files; a pool from a {type(source).__name__} in memory takes none.")
        return in_memory
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(
            f"Cannot load a pool from a {type(source).__name__}. Pass a path, 'hf:NAME' (a hub dataset), "
            "'sample:NAME', a datasets Dataset / DatasetDict / IterableDataset, a pandas DataFrame, a list of "
            "dicts or a dict of lists."
        )
    text = os.fspath(source)
    if text.startswith("sample:"):
        from curate.data import sample_path

        text = sample_path(text)
    if text.startswith(HUB_PREFIX) or fmt == "hub":
        name = text.removeprefix(HUB_PREFIX).strip()
        if not name:
            raise ConfigError(f"'{text}' names no hub dataset; write e.g. hf:stanfordnlp/sst2.")
        return _read_hub(name, split), HUB_PREFIX + name
    path = Path(text).expanduser()
    if not path.exists():
        raise _no_such_file(path)
    if path.is_dir():
        if fmt is not None:
            raise DataError(f"{path}: is a folder; format='{format}' reads a file. A folder must be one written by "
                            "Dataset.save_to_disk (pass no format), or name a file inside it.")
        return _read_saved(path, split), str(path)
    check_regular_file(path, "pool file")  # a named pipe or a device would block or never end
    fmt = fmt or _guess_format(path)
    if fmt == "lines":
        return _read_lines(path, lines), str(path)
    readers = {
        "jsonl": _read_jsonl,
        "json": _read_json,
        "csv": lambda p: _read_delimited(p, ","),
        "tsv": lambda p: _read_delimited(p, "\t"),
        "parquet": _read_parquet,
        "arrow": _read_parquet,
    }
    return readers[fmt](path), str(path)


def _no_such_file(path: Path) -> DataError:
    """"No such file", with the closest names in its folder, and the hub spelling for a hub-like name."""
    text = path.as_posix()
    hub_like = not path.suffix and not text.startswith((".", "/", "~")) and text.count("/") <= 1
    hint = f" For a hub dataset write '{HUB_PREFIX}{text}'." if hub_like else ""
    folder = path.parent
    if not folder.is_dir():
        return DataError(f"{path}: no such file (the folder {folder} does not exist either).{hint}")
    try:
        names = [p.name for _, p in zip(range(10_000), folder.iterdir(), strict=False)]
    except OSError:
        names = []
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    mean = f" Did you mean {' or '.join(repr(str(folder / c)) for c in close)}?" if close else ""
    return DataError(f"{path}: no such file.{mean}{hint}")


def _read_memory(source: Any, split: str) -> tuple[Any, str] | None:
    """The Dataset and a name for an in-memory source, or None when ``source`` is not data in memory."""
    import datasets

    if isinstance(source, datasets.Dataset):
        return source, "<Dataset>"
    if isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        kind = type(source).__name__
        if split not in source:
            raise ConfigError(f"The {kind} has no split '{split}'. Available splits: {', '.join(source)}. "
                              f"Pass one as split=.{did_you_mean(split, list(source))}")
        source = source[split]
        if isinstance(source, datasets.Dataset):
            return source, f"<{kind}[{split}]>"
        return _materialise(source, f"<{kind}[{split}]>"), f"<{kind}[{split}]>"
    if isinstance(source, datasets.IterableDataset):
        return _materialise(source, "<IterableDataset>"), "<IterableDataset>"
    pandas = sys.modules.get("pandas")  # a DataFrame exists only if pandas was imported
    if pandas is not None and isinstance(source, pandas.DataFrame):
        names = list(source.columns)
        odd = [c for c in names if not isinstance(c, str)]
        if odd or len(set(names)) != len(names):
            raise DataError(f"<DataFrame>: column names must be distinct strings; got {names[:10]}. "
                            "Rename them (df.columns = [...]).")
        frame = source.astype(object).where(source.notna(), None)  # NaN (pandas' missing) -> None
        return _from_records(frame.to_dict("records"), "<DataFrame>"), "<DataFrame>"
    if isinstance(source, list):
        return _from_records(source, "<list>"), "<list>"
    if isinstance(source, Mapping):
        lengths = {k: len(v) for k, v in source.items() if isinstance(v, (list, tuple))}
        if len(lengths) != len(source) or len(set(lengths.values())) > 1 or not all(isinstance(k, str) for k in source):
            raise DataError("<dict>: a pool from a dict needs column name -> list, all lists of one length; got "
                            f"{ {k: (len(v) if isinstance(v, (list, tuple)) else type(v).__name__) for k, v in source.items()} }.")
        n = next(iter(lengths.values()), 0)
        records = [{k: source[k][i] for k in source} for i in range(n)]
        return _from_records(records, "<dict>"), "<dict>"
    return None


def _materialise(source: Any, where: str):
    """An IterableDataset read into a Dataset, at most MAX_ITERABLE_ROWS rows."""
    import datasets

    rows = list(itertools.islice(iter(source), MAX_ITERABLE_ROWS + 1))
    if len(rows) > MAX_ITERABLE_ROWS:
        raise DataError(f"{where}: more than {MAX_ITERABLE_ROWS:,} rows; a pool lives in memory. Take a part first: "
                        f"load_pool(ds.take({MAX_ITERABLE_ROWS:,})) or ds.shuffle(seed=0).take(n).")
    features = getattr(source, "features", None)
    if features is not None and rows:
        return datasets.Dataset.from_list(rows, features=features)
    return _from_records(rows, where)


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
            f"Use one of {', '.join(sorted(mapping))} or pass format= (one of {', '.join(_FORMATS)}); "
            "'<label> <text>' per line (SST-2, TREC) is format='lines'."
        )
    return mapping[suffix]


def _decode(path: Path) -> str:
    return decode_utf8(path.read_bytes(), path)


def _read_jsonl(path: Path):
    return _from_records(read_jsonl(path), str(path), numbered=True)


def _read_lines(path: Path, spec: _LinesFormat):
    """One example per line: ``<label><sep><text>``, ``<text><sep><label>`` or just the text."""
    sep = "[ \\t]+" if spec.separator is None else re.escape(spec.separator) + "+"
    shape = {"first": f"^(?P<label>\\S+?){sep}(?P<text>.*\\S)", "last": f"^(?P<text>.*?\\S){sep}(?P<label>\\S+)$"}
    pattern = re.compile(shape[spec.label]) if spec.label else None
    example = {"first": "'<label> <text>'", "last": "'<text> <label>'"}
    records = []
    for lineno, line in enumerate(split_lines(_decode(path)), start=1):
        body = line.strip(" \t")
        if not body:
            continue
        if pattern is None:
            records.append((lineno, {"text": body}))
            continue
        match = pattern.match(body)
        if match is None:
            where = "tab" if spec.separator == "\t" else "space" if spec.separator == " " else "space or tab"
            raise DataError(f"{path}:{lineno}: expected {example[spec.label]} (separated by a {where}), got "
                            f"{line[:60]!r}. Other layouts: format='lines:label_last', 'lines:no_label', 'lines:tab'.")
        records.append((lineno, {"label": match["label"], "text": match["text"].strip(" \t")}))
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
    # csv splits records at "\n", "\r" and "\r\n" only (StringIO with newline=""), not at U+2028.
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty (no header row).") from None
    except csv.Error as err:
        raise DataError(f"{path}:1: not readable as {'CSV' if delimiter == ',' else 'TSV'} ({err}).") from None
    if len(set(header)) != len(header) or any(not h.strip() for h in header):
        raise DataError(f"{path}:1: the header must name every column once; got {header}.")
    records = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: not readable ({err}). Check the quoting.") from None
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
    import pyarrow.parquet as pq

    try:
        pq.read_schema(str(path))  # a file that is not Parquet fails here, before datasets logs its own error
        return datasets.Dataset.from_parquet(str(path))
    except Exception as err:  # pyarrow raises many types; report them in one place
        raise DataError(f"{path}: could not read as Parquet: {err}") from None


def _read_saved(path: Path, split: str):
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as err:
        raise DataError(f"{path}: is a folder, but not one written by Dataset.save_to_disk ({err}). "
                        "Name a file inside it instead.") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ConfigError(f"{path}: no split '{split}'. Available splits: {', '.join(data)}.")
        data = data[split]
    return data


def _read_hub(name: str, split: str):
    import datasets

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as err:
        raise DataError(f"{HUB_PREFIX}{name}: could not load the hub dataset '{name}' split '{split}' "
                        f"({type(err).__name__}: {err}).") from None
    if not isinstance(data, datasets.Dataset):
        raise DataError(f"{HUB_PREFIX}{name}: expected one split as a Dataset, got {type(data).__name__}.")
    return data


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
