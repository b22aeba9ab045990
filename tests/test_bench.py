"""``curate bench``: grid expansion, resume and skip, the table, the report from the table alone, peers,
the speed table, and clear errors for bad recipes. Tiny synthetic grids (vectors, no model) run in
well under a second per cell; one test runs the real embedder on the shipped reviews."""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import HashEmbedder

from curate.bench.config import BenchConfig, Cell, expand_grid, load_bench_config
from curate.bench.run import read_table, run_bench
from curate.config import from_dict
from curate.errors import ConfigError

TINY = """
name: tiny
grid:
  dataset: [blobs]
  strategy: [random, entropy, kcenter]
  seed: [0, 1]
datasets:
  blobs: {source: synthetic, params: {n_pool: 200, n_test: 80, dim: 8, classes: 3, spread: 1.0}}
schedules:
  default: {init: 6, batch: 6, rounds: 4}
prices: {human_per_label: 0.5}
"""

TIMING = ["wall_seconds", "elapsed_seconds", "select_seconds"]


def recipe(tmp_path: Path, text: str = TINY, name: str = "bench.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def without_timings(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=TIMING).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- config


def test_grid_expands_every_combination_in_a_stable_order(tmp_path):
    config = load_bench_config(recipe(tmp_path, TINY.replace("seed: [0, 1]", "seed: [0, 1]\n  annotator: [gold, free]")
                                      + "annotators:\n  free: {kind: gold}\n"))
    cells = expand_grid(config)
    assert len(cells) == 1 * 1 * 3 * 1 * 2 * 2
    assert len({c.folder for c in cells}) == len(cells)
    # strategies of one seed next to each other, so a stopped run leaves whole comparisons
    assert [c.strategy for c in cells[:3]] == ["random", "entropy", "kcenter"]
    assert {c.seed for c in cells[:3]} == {0}
    assert cells[0] == Cell("classification", "blobs", "random", "default", "gold", 0)
    assert cells[0].folder == "classification__blobs__random__default__gold__seed0"
    assert Cell("icl", "d", "small-text:BreakingTies", "s", "a", 3).folder == "icl__d__small-text-BreakingTies__s__a__seed3"


@pytest.mark.parametrize("text, key", [
    (TINY.replace("strategy: [random", "stratgy: [random"), "grid.stratgy"),
    (TINY.replace("default: {init: 6, batch: 6", "default: {init: 6, batchh: 6"), "schedules.default.batchh"),
    (TINY.replace("prices: {human_per_label", "prices: {human_per_lable"), "prices.human_per_lable"),
    (TINY.replace("source: synthetic", "source: synthetik"), "datasets.*.source"),
    (TINY.replace("n_pool: 200", "n_pool: 200, n_pol: 3"), "datasets.*.params.n_pol"),
    (TINY.replace("dataset: [blobs]", "dataset: [blobz]"), "grid.dataset"),
    (TINY.replace("seed: [0, 1]", "seed: [0, 1]\n  schedule: [fast]"), "grid.schedule"),
    (TINY.replace("rounds: 4", "rounds: four"), "schedules.default.rounds"),
    (TINY + "speed: {sizes: [10, x]}\n", "speed.sizes"),
])
def test_a_bad_recipe_gets_an_error_naming_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace("*", r"\*").replace(".", r"\.")):
        config = load_bench_config(recipe(tmp_path, text))
        run_bench(config, tmp_path / "out")


def test_unknown_keys_suggest_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown key 'grid\.stratgy'\. Did you mean 'grid\.strategy'\?"):
        load_bench_config(recipe(tmp_path, TINY.replace("strategy: [random", "stratgy: [random")))


def test_bad_yaml_and_unknown_names_fail_before_any_cell_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_bench_config(bad)
    config = load_bench_config(recipe(tmp_path, TINY.replace("kcenter]", "kcentre]")))
    with pytest.raises(ConfigError, match="'kcentre' is not a strategy.*Did you mean 'kcenter'"):
        run_bench(config, tmp_path / "out")
    assert not (tmp_path / "out" / "cells").exists()
    config = load_bench_config(recipe(tmp_path, TINY.replace("paradigm", "x") .replace("grid:", "grid:\n  paradigm: [clasification]")))
    with pytest.raises(ConfigError, match="Did you mean 'classification'"):
        run_bench(config, tmp_path / "out2")
    config = load_bench_config(recipe(tmp_path, TINY.replace("kcenter]", "small-text:BreakingTie]")))
    with pytest.raises(ConfigError, match="Did you mean 'BreakingTies'"):
        run_bench(config, tmp_path / "out3")


def test_named_blocks_are_typed():
    config = from_dict(BenchConfig, {"grid": {"dataset": ["synthetic"], "strategy": ["votek10"]},
                                     "strategies": {"votek10": {"name": "votek", "params": {"k": 10}}},
                                     "schedules": {"fast": {"init": 2, "batch": 2, "rounds": 2}}})
    assert config.strategy("votek10").params == {"k": 10}
    assert config.schedules["fast"].planned_labels == [2, 4]
    assert config.schedules["default"].init == 25  # always defined
    assert config.dataset("synthetic").source == "synthetic"


# ---------------------------------------------------------------------------------------------- running


def test_a_grid_runs_into_one_tidy_table(tmp_path):
    config = load_bench_config(recipe(tmp_path))
    result = run_bench(config, tmp_path / "out")
    assert len(result.ran) == 6 and not result.skipped
    table = read_table(tmp_path / "out")
    assert len(table) == 6 * 4
    assert list(table.columns[:6]) == list(Cell.KEYS)
    for column in ("round", "labels", "spent", "input_tokens", "output_tokens", "wall_seconds", "select_seconds",
                   "metric", "accuracy", "macro_f1"):
        assert column in table.columns
    cell = table[(table.strategy == "entropy") & (table.seed == 1)]
    assert cell["labels"].tolist() == [6, 12, 18, 24]
    assert cell["spent"].tolist() == pytest.approx([3.0, 6.0, 9.0, 12.0])  # 0.5 per gold (people) label
    assert cell["human_labels"].tolist() == [6, 12, 18, 24]
    assert (cell["metric"] == cell["accuracy"]).all()
    # a round's wall time includes its selection; elapsed adds them up
    assert (table["wall_seconds"] >= table["select_seconds"]).all()
    assert cell["elapsed_seconds"].iloc[-1] == pytest.approx(cell["wall_seconds"].sum())
    # every strategy starts from the same random labels for a seed (the classic protocol)
    first = table[(table["round"] == 0) & (table.seed == 0)]["accuracy"]
    assert first.nunique() == 1
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(csv) == len(table)
    assert (tmp_path / "out" / "bench.yaml").exists() and (tmp_path / "out" / "versions.json").exists()


def test_interrupted_run_resumes_and_done_cells_are_skipped(tmp_path, monkeypatch):
    config = load_bench_config(recipe(tmp_path))
    reference = without_timings(read_table(_run(config, tmp_path / "ref")))

    # Interrupt inside the fourth cell (random, seed 1), in its third round: while training, before the
    # round is journalled as done.
    from curate.learners import EmbeddingClassifier

    real_fit, calls = EmbeddingClassifier.fit, {"n": 0}

    def crashing_fit(self, ids, labels):
        calls["n"] += 1
        if calls["n"] == 3 * 4 + 3:  # three whole cells of 4 rounds, then the third fit of the fourth
            raise KeyboardInterrupt
        return real_fit(self, ids, labels)

    monkeypatch.setattr(EmbeddingClassifier, "fit", crashing_fit)
    with pytest.raises(KeyboardInterrupt):
        run_bench(config, tmp_path / "out")
    monkeypatch.setattr(EmbeddingClassifier, "fit", real_fit)
    partial = read_table(tmp_path / "out")
    assert len(partial) == 3 * 4  # the finished cells' rows are already in the table
    cells = tmp_path / "out" / "cells"
    stopped = cells / "classification__blobs__random__default__gold__seed1"
    assert (stopped / "journal.sqlite").exists() and not (stopped / "rows.json").exists()

    result = run_bench(config, tmp_path / "out")
    assert [c.describe() for c in result.skipped] == [c.describe() for c in expand_grid(config)[:3]]
    assert len(result.ran) == 3
    resumed = read_table(tmp_path / "out")
    pd.testing.assert_frame_equal(without_timings(resumed), reference)

    # A third run has nothing to do and leaves the table exactly as it was.
    before = (tmp_path / "out" / "results.csv").read_bytes()
    again = run_bench(config, tmp_path / "out")
    assert not again.ran and len(again.skipped) == 6
    assert (tmp_path / "out" / "results.csv").read_bytes() == before


def test_a_changed_cell_definition_is_refused_not_mixed_in(tmp_path):
    config = load_bench_config(recipe(tmp_path))
    run_bench(config, tmp_path / "out", limit=1)
    changed = load_bench_config(recipe(tmp_path, TINY.replace("batch: 6", "batch: 5")))
    with pytest.raises(ConfigError, match="another definition"):
        run_bench(changed, tmp_path / "out")


def test_limit_stops_after_that_many_cells(tmp_path):
    config = load_bench_config(recipe(tmp_path))
    result = run_bench(config, tmp_path / "out", limit=2)
    assert len(result.ran) == 2
    assert len(read_table(tmp_path / "out")) == 2 * 4


def test_small_text_peers_run_on_the_same_work(tmp_path):
    pytest.importorskip("small_text")
    text = TINY.replace("strategy: [random, entropy, kcenter]",
                        "strategy: [entropy, small-text:PredictionEntropy, kcenter, small-text:GreedyCoreset]")
    table = read_table(_run(load_bench_config(recipe(tmp_path, text)), tmp_path / "out"))
    assert len(table) == 4 * 2 * 4
    for ours, peer in (("entropy", "small-text:PredictionEntropy"), ("kcenter", "small-text:GreedyCoreset")):
        a = table[table.strategy == ours].reset_index(drop=True)
        b = table[table.strategy == peer].reset_index(drop=True)
        # the same start (round 0) for both
        assert a[a["round"] == 0]["accuracy"].tolist() == b[b["round"] == 0]["accuracy"].tolist()
    # entropy is entropy: the peer picks the same items from the same probabilities (ties aside)
    e, p = (table[table.strategy == s]["accuracy"].tolist() for s in ("entropy", "small-text:PredictionEntropy"))
    assert e == p


def test_missing_small_text_gives_a_clear_error(monkeypatch):
    import builtins

    from curate.bench.peers import SmallTextStrategy
    from curate.errors import MissingDependencyError

    real_import = builtins.__import__

    def no_small_text(name, *args, **kwargs):
        if name.startswith("small_text"):
            raise ImportError("No module named 'small_text'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_small_text)
    with pytest.raises(MissingDependencyError, match=r"curate\[bench\]"):
        SmallTextStrategy("BreakingTies")


# ---------------------------------------------------------------------------------------------- report


def test_report_is_rebuilt_from_the_table_alone(tmp_path):
    config = load_bench_config(recipe(tmp_path))
    out = _run(config, tmp_path / "out")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "results.parquet", alone / "results.parquet")  # the table and nothing else
    from curate.bench.report import write_report

    folder = write_report(alone)
    md = (folder / "report.md").read_text()
    html = (folder / "report.html").read_text()
    pngs = sorted(folder.glob("curves_*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 5000
    assert f"]({pngs[0].name})" in md
    assert "data:image/png;base64," in html and "<img" in html and pngs[0].name not in html  # self-contained
    for s in ("random", "entropy", "kcenter"):
        assert f"| {s} | 2 |" in md
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["strategy"]) == {"random", "entropy", "kcenter"}
    assert summary.loc[summary.strategy == "random", "vs_random_diff"].isna().all()
    # the same report from the CSV alone
    (alone / "results.parquet").unlink()
    shutil.copy(out / "results.csv", alone / "results.csv")
    assert (write_report(alone, out=tmp_path / "again") / "report.md").read_text() == md


def test_auc_and_paired_comparison_by_hand():
    from curate.bench.report import auc, paired, summarise

    assert auc([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert auc([10, 20, 30], [0.5, 0.7, 0.7]) == pytest.approx((0.6 + 0.7) / 2)
    assert auc([0, 10, 20], [0.0, 1.0, 1.0], lo=10, hi=20) == pytest.approx(1.0)
    cmp = paired([0.8, 0.7, 0.9, 0.6], [0.7, 0.6, 0.8, 0.7])
    assert cmp["diff"] == pytest.approx(0.05) and cmp["wins"] == 3 and cmp["losses"] == 1 and cmp["n"] == 4
    assert cmp["sign_p"] == pytest.approx(0.625)  # 2 x P(X >= 3), X ~ Bin(4, 1/2)
    rows = []
    for s, base in (("random", 0.5), ("entropy", 0.6)):
        for seed in (0, 1, 2):
            for r, labels in enumerate((10, 20, 30)):
                rows.append({"paradigm": "classification", "dataset": "d", "strategy": s, "schedule": "x",
                             "annotator": "gold", "seed": seed, "round": r, "labels": labels, "spent": labels * 0.1,
                             "currency": "USD", "metric": base + 0.01 * seed + 0.1 * r})
    (panel,) = summarise(pd.DataFrame(rows))
    entropy = next(r for r in panel.rows if r["strategy"] == "entropy")
    assert entropy["auc_mean"] == pytest.approx(0.7 + 0.01)
    assert entropy["vs_random_diff"] == pytest.approx(0.1)
    assert entropy["vs_random_wins"] == 3
    assert entropy["auc_money_mean"] == pytest.approx(entropy["auc_mean"])


def test_report_names_the_metric_columns_when_asked_for_a_missing_one(tmp_path):
    out = _run(load_bench_config(recipe(tmp_path)), tmp_path / "out")
    from curate.bench.report import write_report

    with pytest.raises(ConfigError, match="accuracy"):
        write_report(out, metric="f1")
    with pytest.raises(ConfigError, match="no benchmark table"):
        write_report(tmp_path)


# ---------------------------------------------------------------------------------------------- speed, CLI


def test_speed_table_times_and_skips(tmp_path):
    from curate.bench.config import SpeedConfig
    from curate.bench.speed import run_speed

    speed = SpeedConfig(sizes=[500, 2000], strategies=["random", "entropy", "kcenter"], budget=10, labeled=10, dim=16,
                        max_size={"kcenter": 1000})
    table = run_speed(speed, tmp_path)
    assert len(table) == 6
    skipped = table[table.skipped]
    assert skipped[["strategy", "size"]].values.tolist() == [["kcenter", 2000]]
    assert (table[~table.skipped]["seconds"] >= 0).all() and (table[~table.skipped]["peak_mib"] >= 0).all()
    assert (tmp_path / "speed.parquet").exists()


def test_cli_runs_reports_and_resumes(tmp_path, capsys):
    from curate.cli import main

    path = recipe(tmp_path, TINY + "speed: {sizes: [300], strategies: [random, margin], budget: 5, labeled: 5, dim: 8}\n")
    out = tmp_path / "out"
    assert main(["--quiet", "bench", str(path), "--out", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "[6/6]" in text and "report:" in text
    assert (out / "report" / "report.html").exists() and (out / "speed.csv").exists()
    assert "Selection speed" in (out / "report" / "report.md").read_text()
    assert main(["--quiet", "bench", str(path), "--out", str(out), "--no-speed", "--no-report"]) == 0
    assert "6 of 6 cells already done" in capsys.readouterr().out
    before = pd.read_parquet(out / "results.parquet")
    assert main(["--quiet", "bench", str(path), "--out", str(out), "--rebuild-table"]) == 0
    assert "rows of 6 done cells rewritten" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), before)
    assert main(["--quiet", "bench", "report", str(out), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").exists()
    assert main(["--quiet", "bench", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


HAVE_SMALL_TEXT = importlib.util.find_spec("small_text") is not None


def test_default_recipes_parse():
    root = Path(__file__).resolve().parents[1] / "recipes"
    for name in ("bench-classification.yaml", "bench-icl.yaml", "bench-sft.yaml"):
        config = load_bench_config(root / name)
        cells = expand_grid(config)
        assert cells, name
        from curate.bench.registry import load_runner

        for paradigm in config.grid.paradigm:
            runner = load_runner(paradigm, config)
            for cell in cells:
                peer = config.strategy(cell.strategy).name.startswith("small-text:")
                if cell.paradigm == paradigm and not (peer and not HAVE_SMALL_TEXT):  # peers: a bench-only extra
                    runner.check(cell)


@pytest.mark.real
def test_real_embeddings_on_the_shipped_reviews(tmp_path):
    text = """
    name: reviews
    grid:
      dataset: [reviews]
      strategy: [random, margin]
      seed: [0]
    schedules:
      default: {init: 8, batch: 8, rounds: 5}
    """
    table = read_table(_run(load_bench_config(recipe(tmp_path, text)), tmp_path / "out"))
    assert table["labels"].tolist() == [8, 16, 24, 32, 40] * 2
    assert table["accuracy"].between(0, 1).all()
    for _, cell in table.groupby("strategy"):  # 50 balanced test reviews: 0.5 is chance
        assert cell["accuracy"].iloc[-1] > 0.6 and cell["accuracy"].iloc[-1] > cell["accuracy"].iloc[0]


def _run(config, out: Path) -> Path:
    run_bench(config, out)
    return out


def test_vectors_are_float32_unit_rows():
    from curate.bench.config import DatasetConfig
    from curate.bench.datasets import load_split

    split = load_split("s", DatasetConfig(source="synthetic", params={"n_pool": 20, "n_test": 5, "dim": 4}))
    assert split.pool_vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(split.pool_vectors, axis=1), 1.0, atol=1e-5)
    assert len(split.test_labels) == 5 and set(split.pool_labels) <= set(split.classes)


def test_icl_cells_evaluate_the_lm_with_the_labels_bought_so_far(tmp_path, tiny_lm_dir, monkeypatch):
    import curate.embed

    monkeypatch.setattr(curate.embed, "load_embedder", lambda *a, **k: HashEmbedder())
    text = f"""
    name: icl
    grid:
      paradigm: [icl]
      dataset: [reviews]
      strategy: [random, votek]
      seed: [0]
    schedules:
      default: {{init: 2, batch: 2, rounds: 2, init_strategy: same}}
    options:
      icl: {{n_test: 6, k: 2, pool_per_seed: 40}}
    lm: {{backend: hf, model: "{tiny_lm_dir}", device: cpu}}
    prices: {{human_per_label: 1.0}}
    """
    out = _run(load_bench_config(recipe(tmp_path, text)), tmp_path / "out")
    table = read_table(out)
    assert table["labels"].tolist() == [2, 4, 2, 4]
    assert table["spent"].tolist() == [2.0, 4.0, 2.0, 4.0]
    assert table["icl_accuracy"].between(0, 1).all() and (table["metric"] == table["icl_accuracy"]).all()
    assert (table["eval_seconds"] > 0).all() and table["icl_calibrated_accuracy"].notna().all()
    from curate.bench.report import write_report

    assert "icl_accuracy" in (write_report(out) / "report.md").read_text()


def test_sft_cells_train_the_lm_round_by_round_and_measure_held_out_loglik(tmp_path, tiny_lm_dir):
    text = f"""
    name: sft
    grid:
      paradigm: [sft]
      dataset: [instructions]
      strategy: [random, entropy]
      seed: [0]
    schedules:
      default: {{init: 2, batch: 2, rounds: 2, init_strategy: random}}
    options:
      sft: {{eval_n: 4, sample: 4, answer_tokens: 3, max_length: 48, train: {{max_steps: 1}},
             lora: {{r: 2, lora_alpha: 4, target_modules: all-linear}}}}
    lm: {{backend: hf, model: "{tiny_lm_dir}", device: cpu}}
    prices: {{human_per_label: 0.5}}
    """
    config = load_bench_config(recipe(tmp_path, text))
    out = _run(config, tmp_path / "out")
    table = read_table(out)
    assert table["labels"].tolist() == [2, 4, 2, 4] and table["spent"].tolist() == [1.0, 2.0, 1.0, 2.0]
    assert (table["sft_loglik"] < 0).all() and (table["metric"] == table["sft_loglik"]).all()
    assert np.allclose(table["sft_perplexity"], np.exp(-table["sft_loglik"]))
    bad = load_bench_config(recipe(tmp_path, text.replace("strategy: [random, entropy]", "strategy: [margin]")))
    from curate.bench.registry import load_runner

    with pytest.raises(ConfigError, match="needs class probabilities.*the sft benchmark can use: random"):
        load_runner("sft", bad).check(expand_grid(bad)[0])


@pytest.mark.parametrize("name", ["LeastConfidence", "PredictionEntropy", "BreakingTies", "GreedyCoreset",
                                  "LightweightCoreset", "EmbeddingKMeans"])
def test_every_peer_selects_unlabelled_unique_ids_deterministically(name):
    pytest.importorskip("small_text")
    from curate.acquire.base import PoolState
    from curate.bench.peers import SmallTextStrategy
    from curate.bench.speed import mixture, probabilities
    from curate.index import EmbeddingIndex

    index = EmbeddingIndex.from_vectors(mixture(300, 16, seed=0), kind="flat")
    state = PoolState(size=300, labeled=np.arange(0, 300, 30), index=index, probs=probabilities(300, 3, seed=1))
    picks = [SmallTextStrategy(name).select(state, 7, rng=np.random.default_rng(5)).ids for _ in range(2)]
    assert len(set(picks[0].tolist())) == 7 and not np.isin(picks[0], state.labeled).any()
    assert picks[0].tolist() == picks[1].tolist()


def test_paradigm_options_fill_defaults_and_refuse_unknown_keys():
    from curate.paradigms.classify.bench import ClassificationRunner
    from curate.paradigms.icl.bench import ICLRunner
    from curate.paradigms.sft.bench import SFTRunner

    grid = {"dataset": ["synthetic"], "strategy": ["random"]}

    def bench(options):
        return from_dict(BenchConfig, {"grid": grid, "options": options})

    config = bench({"icl": {"k": 2}, "classification": {"C": 3.0}})
    assert ICLRunner(config).options["k"] == 2 and ICLRunner(config).options["n_test"] == 40
    assert ClassificationRunner(config).options == {"C": 3.0}
    assert ClassificationRunner(bench({})).options == {"C": config.learner.C}
    for runner, paradigm, typo, hint in ((ICLRunner, "icl", "n_tset", "n_test"), (SFTRunner, "sft", "eval", "eval_n"),
                                         (ClassificationRunner, "classification", "c", "C")):
        bad = bench({paradigm: {typo: 1}})
        with pytest.raises(ConfigError, match=f"Unknown key 'options.{paradigm}.{typo}'.*{hint}"):
            runner(bad)


# ---------------------------------------------------------------------------------------------- issue 18


def test_a_sub_grid_run_into_a_bench_folder_keeps_every_finished_cell(tmp_path):
    path = recipe(tmp_path)
    reference = without_timings(read_table(_run(load_bench_config(path), tmp_path / "ref")))
    out = tmp_path / "out"
    # the grid in parts: one strategy, then one seed of another, then the whole grid (nothing left to run)
    run_bench(load_bench_config(path, ["grid.strategy=[kcenter]"]), out)
    result = run_bench(load_bench_config(path, ["grid.strategy=[entropy]", "grid.seed=[1]"]), out)
    assert len(result.ran) == 1 and len(result.others) == 2
    assert len(read_table(out)) == 3 * 4  # kcenter's two cells were not dropped
    run_bench(load_bench_config(path), out)
    run_bench(load_bench_config(path, ["grid.strategy=[random]", "grid.seed=[0]"]), out)  # already done: rewrites the table
    table = read_table(out)
    pd.testing.assert_frame_equal(without_timings(table), reference)  # the same table, in the grid's order
    from curate.bench.report import write_report

    md = (write_report(out) / "report.md").read_text()
    for s in ("random", "entropy", "kcenter"):
        assert f"| {s} | 2 |" in md
    # a finished cell outside the grid that this recipe would define otherwise is refused, not mixed in
    with pytest.raises(ConfigError, match="would define otherwise"):
        run_bench(load_bench_config(path, ["grid.strategy=[margin]", "learner.C=1.0"]), out)
    assert not (out / "cells" / "classification__blobs__margin__default__gold__seed0").exists()


def test_grid_exclude_gives_one_strategy_fewer_seeds(tmp_path):
    text = TINY.replace("seed: [0, 1]", "seed: [0, 1, 2]\n  exclude:\n    - {strategy: kcenter, seed: [1, 2]}")
    config = load_bench_config(recipe(tmp_path, text))
    cells = expand_grid(config)
    assert len(cells) == 3 * 3 - 2
    assert [c.seed for c in cells if c.strategy == "kcenter"] == [0]
    out = _run(config, tmp_path / "out")
    from curate.bench.report import write_report

    folder = write_report(out)
    summary = pd.read_csv(folder / "summary.csv").set_index("strategy")
    assert summary.loc["kcenter", "seeds"] == 1 and summary.loc["entropy", "seeds"] == 3
    assert summary.loc["kcenter", "vs_random_n"] == 1 and summary.loc["entropy", "vs_random_n"] == 3
    assert "kcenter: 1 seed: no spread or test." in (folder / "report.md").read_text()
    for bad, match in (("{strategy: kcentre}", r"grid\.exclude\[0\]\.strategy names 'kcentre'.*Did you mean 'kcenter'"),
                       ("{seeds: [1]}", r"Unknown key 'grid\.exclude\[0\]\.seeds'.*Did you mean 'seed'"),
                       ("{seed: [7]}", r"grid\.exclude\[0\]\.seed names 7"), ("{}", r"grid\.exclude\[0\] must map")):
        with pytest.raises(ConfigError, match=match):
            load_bench_config(recipe(tmp_path, TINY.replace("seed: [0, 1]", f"seed: [0, 1]\n  exclude: [{bad}]"), "bad.yaml"))


def test_dry_run_prints_cells_label_schedule_and_money_worst_case(tmp_path, capsys):
    from curate.bench.cli import run_bench_command
    from curate.cli import build_parser

    text = TINY.replace("seed: [0, 1]", "seed: [0, 1]\n  exclude: [{strategy: kcenter, seed: 1}]")
    out = tmp_path / "out"
    args = build_parser()[0].parse_args(["bench", str(recipe(tmp_path, text)), "--out", str(out)])
    args.dry_run = True  # `--dry-run` on the command line
    assert run_bench_command(args) == 0
    said = capsys.readouterr().out
    assert "1 paradigm x 1 dataset x 3 strategies x 1 schedule x 1 annotator x 2 seeds" in said
    assert "= 6 cells, less 1 excluded by grid.exclude: 5 to run" in said
    assert "schedule default: 4 rounds, round 0 included: 6, 12, 18, 24 labels (init 6 by random, then 6 a round)" in said
    assert "annotator gold: 5 cells x at most 12.00 USD (24 labels x at most 0.5000 USD each)" in said
    assert "money worst case: 60.00 USD" in said
    assert not out.exists()  # nothing run, nothing written
    from curate.bench.config import ScheduleConfig

    assert ScheduleConfig(init=20, batch=20, rounds=10).planned_labels == list(range(20, 201, 20))
    assert "round 0 included" in ScheduleConfig.__doc__


def test_report_names_identical_picks_merges_them_and_drops_a_money_panel_that_repeats_labels(tmp_path):
    import matplotlib.image

    from curate.bench.report import summarise, write_report

    text = TINY.replace("strategy: [random, entropy, kcenter]", "strategy: [random, least_confidence, margin, entropy, kcenter]")
    text = text.replace("classes: 3", "classes: 2")  # two classes: least confidence = margin = entropy
    out = _run(load_bench_config(recipe(tmp_path, text)), tmp_path / "out")
    table = read_table(out)
    assert table["picks"].str.fullmatch("[0-9a-f]{16}").all()
    (panel,) = summarise(table)
    assert panel.merged == [["least_confidence", "margin", "entropy"]]
    assert panel.price_per_label == pytest.approx(0.5)
    folder = write_report(out)
    md = (folder / "report.md").read_text()
    assert "least_confidence = margin = entropy on blobs: identical picks in 2/2 seeds (one line in the plot)." in md
    assert "Money = 0.5 USD x labels in every cell: no money panel" in md
    (png,) = folder.glob("curves_*.png")
    assert matplotlib.image.imread(png).shape[1] == 520  # one panel (6.5 in at 80 dpi), not two (880 px)
    # where money is not proportional to labels, the money panel stays
    table = table.assign(spent=table["spent"] + 0.01 * table["round"] ** 2)
    alone = tmp_path / "alone"
    alone.mkdir()
    table.to_csv(alone / "results.csv", index=False)
    folder = write_report(alone)
    assert "no money panel" not in (folder / "report.md").read_text()
    assert matplotlib.image.imread(next(folder.glob("curves_*.png"))).shape[1] == 880


def test_time_left_does_not_count_one_time_setup(tmp_path, monkeypatch):
    import time

    import curate.bench.datasets

    real = curate.bench.datasets.load_split

    def slow_first_load(*args, **kwargs):  # stands in for embedding a dataset the first time
        time.sleep(3.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(curate.bench.datasets, "load_split", slow_first_load)
    said: list[str] = []
    run_bench(load_bench_config(recipe(tmp_path)), tmp_path / "out", progress=said.append)
    first = next(line for line in said if line.startswith("[1/6]"))
    assert "one-time setup" in first
    left = float(first.split("about ")[1].split("s left")[0])
    assert left < 5.0, first  # 5 cells of well under a second; counting the 3 s setup would say >= 15 s


def test_one_seed_report_says_no_spread_or_test_and_how_auc_is_computed(tmp_path):
    from curate.bench.report import write_report

    out = _run(load_bench_config(recipe(tmp_path, TINY.replace("seed: [0, 1]", "seed: [0]"))), tmp_path / "out")
    md = (write_report(out) / "report.md").read_text()
    assert "1 seed: no spread or test." in md
    assert "± 0.0000" not in md and "± 0.00 |" not in md and "| 1.000 |" not in md
    assert ("AUC (labels) = the area under each cell's curve of accuracy against labels on [6, 24] (the label range every "
            "cell of this panel covers), by the trapezoid rule") in md
    assert "divided by 18: a mean accuracy" in md and "± = sample sd (ddof=1) over seeds" in md
    rows = [line for line in md.splitlines() if line.startswith("| entropy |")]
    assert rows and "±" not in rows[0] and "| 1/1 | – | – |" in rows[0]  # no sd, no t-test p, no sign p
