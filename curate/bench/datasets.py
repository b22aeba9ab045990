"""Benchmark datasets: a labelled pool and a labelled test set, read in place (never copied).

* ``sst2``: ``sst2_sentence/stsa.binary.train`` is the pool (6,920), ``stsa.binary.test`` the test set (1,821).
* ``trec``: 6 coarse classes; ``trec/train.txt`` pool (5,452), ``test.txt`` test (500). UTF-8, no final newline.
* ``agnews``: only ``ag_news/test.csv`` (7,600) is here; a seed-0 permutation splits it into a 6,000
  pool and a 1,600 test set. Text = title + description; the backslashes that stand for line breaks
  become spaces, escaped HTML tags are dropped, and ``#39;``-style entity remnants become their characters.
* ``reviews``: the 64 reviews and 50 held-out reviews that ship with curate (``sample:reviews``).
* ``synthetic``: Gaussian blobs on the unit sphere, vectors only (no text, no embedder), for tests.
* ``files``: any pool and test set ``load_pool`` reads, with ``text`` and ``label``.

The shared data folder is ``data_dir``, else ``$CURATE_DATA``, else ``../shared/data`` beside the
repository, else ``/work/shared/data``. The text cleaning matches ``bench/bench_al_classification.py``
and ``bench/bench_icl.py`` byte for byte, so that the embedding cache is shared with them.
"""

from __future__ import annotations

import csv
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curate.errors import ConfigError, DataError
from curate.jsonl import check_regular_file, decode_utf8, split_lines

__all__ = ["Split", "data_root", "load_split"]

SPLIT_SEED = 0  # AG News pool/test split and pool_max/test_max subsampling
AG_POOL, AG_TEST = 6000, 1600


@dataclass
class Split:
    """A pool and a test set. ``pool_vectors`` / ``test_vectors`` are set only for vector datasets."""

    name: str
    pool_texts: list[str]
    pool_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    classes: list[str]
    note: str
    pool_vectors: np.ndarray | None = None
    test_vectors: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def data_root(data_dir: str | None = None) -> Path:
    if data_dir:
        return Path(data_dir)
    if os.environ.get("CURATE_DATA"):
        return Path(os.environ["CURATE_DATA"])
    beside = Path(__file__).resolve().parents[3] / "shared" / "data"
    return beside if beside.is_dir() else Path("/work/shared/data")


def _lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of the non-blank lines; split on "\\n" only (not splitlines(), which also
    splits at U+0085 / U+2028 inside a line); strict UTF-8 so that an odd byte fails loudly here."""
    if not path.exists():
        raise ConfigError(f"Dataset file {path} does not exist. Set datasets.<name>.data_dir or $CURATE_DATA to the "
                          "folder that holds sst2_sentence/, trec/ and ag_news/.")
    text = decode_utf8(check_regular_file(path, "dataset file").read_bytes(), path)
    return [(n, ln) for n, ln in enumerate(split_lines(text), start=1) if ln.strip()]


def read_sst2(path: Path) -> tuple[list[str], list[str]]:
    names = {"0": "negative", "1": "positive"}
    texts, labels = [], []
    for n, line in _lines(path):
        label, _, text = line.partition(" ")
        if label not in names or not text.strip():
            raise DataError(f"{path}:{n}: expected '<0|1> <sentence>', got {line[:60]!r}.")
        texts.append(text.strip())
        labels.append(names[label])
    return texts, labels


def read_trec(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for n, line in _lines(path):
        head, _, text = line.partition(" ")
        coarse, sep, _fine = head.partition(":")
        if not sep or not text.strip():
            raise DataError(f"{path}:{n}: expected 'COARSE:fine question', got {line[:60]!r}.")
        texts.append(text.strip())
        labels.append(coarse)
    return texts, labels


_AG_ENTITY = re.compile(r"(?<![&\w])(#\d+|quot|amp|lt|gt);")


def clean_ag(text: str) -> str:
    text = re.sub(r"\\+", " ", text)  # backslashes (single or doubled) stand for line breaks
    text = re.sub(r"&lt;.*?&gt;", " ", text)  # escaped HTML tags (Reuters ticker links, WP bylines)
    text = _AG_ENTITY.sub(lambda m: html.unescape("&" + m.group(1) + ";"), text)  # ' #39;' -> "'"
    return re.sub(r"\s+", " ", text).strip()


def read_agnews(folder: Path) -> tuple[list[str], list[str], list[str]]:
    classes = [c.strip() for _, c in _lines(folder / "classes.txt")]
    texts, labels = [], []
    with open(folder / "test.csv", encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if len(row) != 3 or not row[0].isdigit():
                raise DataError(f"{folder / 'test.csv'}:{n}: expected 3 fields (class, title, description), got {row!r}.")
            texts.append(clean_ag(f"{row[1]}. {row[2]}"))
            labels.append(classes[int(row[0]) - 1])
    return texts, labels, classes


def _subsample(texts: list[str], labels: list[str], limit: int | None) -> tuple[list[str], list[str], np.ndarray]:
    keep = np.arange(len(texts))
    if limit and len(texts) > limit:
        keep = np.sort(np.random.default_rng([SPLIT_SEED, len(texts)]).choice(len(texts), size=limit, replace=False))
    return [texts[i] for i in keep], [labels[i] for i in keep], keep


def _synthetic(params: dict) -> Split:
    known = {"n_pool", "n_test", "dim", "classes", "spread", "seed"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"Unknown key 'datasets.*.params.{unknown[0]}' for a synthetic dataset. Known: {', '.join(sorted(known))}.")
    n_pool, n_test = int(params.get("n_pool", 400)), int(params.get("n_test", 200))
    dim, c, spread = int(params.get("dim", 16)), int(params.get("classes", 3)), float(params.get("spread", 0.8))
    rng = np.random.default_rng([SPLIT_SEED, int(params.get("seed", 0))])
    centers = rng.standard_normal((c, dim)).astype(np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(c, size=n)
        x = centers[y] + spread * rng.standard_normal((n, dim)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y

    px, py = draw(n_pool)
    tx, ty = draw(n_test)
    classes = [f"c{i}" for i in range(c)]
    return Split("synthetic", [f"item {i}" for i in range(n_pool)], [classes[i] for i in py],
                 [f"test {i}" for i in range(n_test)], [classes[i] for i in ty], classes,
                 f"{c} Gaussian blobs on the unit sphere, dim {dim}, spread {spread}", px, tx)


def load_split(name: str, config) -> Split:
    """The pool and test set of dataset ``name`` as ``config`` (a :class:`~curate.bench.config.DatasetConfig`) defines it."""
    source = config.source or name
    root = data_root(config.data_dir)
    if source == "synthetic":
        split = _synthetic(config.params)
        split.name = name
        return split
    if config.params:
        raise ConfigError(f"datasets.{name}.params is only for synthetic datasets; '{source}' takes none.")
    if source == "sst2":
        pt, pl = read_sst2(root / "sst2_sentence" / "stsa.binary.train")
        tt, tl = read_sst2(root / "sst2_sentence" / "stsa.binary.test")
        classes, note = ["negative", "positive"], "pool = stsa.binary.train, test = stsa.binary.test"
    elif source == "trec":
        pt, pl = read_trec(root / "trec" / "train.txt")
        tt, tl = read_trec(root / "trec" / "test.txt")
        classes, note = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"], "pool = train.txt, test = test.txt (coarse labels)"
    elif source == "agnews":
        texts, labels, classes = read_agnews(root / "ag_news")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
        pool_pos, test_pos = order[:AG_POOL], order[AG_POOL:AG_POOL + AG_TEST]
        pt, pl = [texts[i] for i in pool_pos], [labels[i] for i in pool_pos]
        tt, tl = [texts[i] for i in test_pos], [labels[i] for i in test_pos]
        note = f"test.csv split by a seed-{SPLIT_SEED} permutation: {AG_POOL} pool / {AG_TEST} test"
    elif source in ("reviews", "files"):
        from curate.pool import load_pool

        if source == "reviews":
            pool_pc, test_pc, note = ("sample:reviews", "id"), ("sample:reviews-test", "id"), "the sample reviews curate ships"
            pool = load_pool(pool_pc[0], id_column=pool_pc[1], require=("text", "label"))
            test = load_pool(test_pc[0], id_column=test_pc[1], require=("text", "label"))
        else:
            if config.pool is None or config.test is None or not config.pool.path or not config.test.path:
                raise ConfigError(f"datasets.{name}: source 'files' needs pool.path and test.path.")
            pool, test = (load_pool(pc.path, columns=pc.columns, id_column=pc.id_column, format=pc.format,
                                    split=pc.split, require=("text", "label")) for pc in (config.pool, config.test))
            note = f"pool = {config.pool.path}, test = {config.test.path}"
        pt, pl = pool.texts(), [str(v) for v in pool.column("label")]
        tt, tl = test.texts(), [str(v) for v in test.column("label")]
        classes = [str(c) for c in config.labels] if config.labels else sorted(set(pl))
    else:
        raise ConfigError(f"Unknown dataset source '{source}' for dataset '{name}'.")
    full_pool, full_test = len(pt), len(tt)
    pt, pl, _ = _subsample(pt, pl, config.pool_max)
    tt, tl, _ = _subsample(tt, tl, config.test_max)
    if len(pt) < full_pool:
        note += f"; pool subsampled {full_pool} -> {len(pt)} (seed {SPLIT_SEED})"
    if len(tt) < full_test:
        note += f"; test subsampled {full_test} -> {len(tt)} (seed {SPLIT_SEED})"
    unknown = sorted((set(pl) | set(tl)) - set(classes))
    if unknown:
        raise DataError(f"dataset '{name}': labels {unknown[:5]} are not among the classes {classes}.")
    return Split(name, pt, pl, tt, tl, classes, note)
