"""``curate bench report``: learning curves, areas under them, and paired comparisons against random,
from the benchmark table alone (``results.parquet`` or ``results.csv``; ``speed.*`` when present).

* Panels: one per (paradigm, dataset, schedule, annotator); strategies x seeds inside.
* AUC: the area under a cell's learning curve (metric vs labels, and vs money), by the trapezoid rule
  on the range every cell of the panel covers, divided by that range: a mean metric, in the metric's
  own units. Mean ± sd (ddof=1) over seeds; with one seed, no ± and no test.
* Paired comparison with ``random`` on the same seeds (the same random start, with the classic
  schedule): mean AUC difference (x100), the seeds won, a paired t-test and an exact two-sided sign
  test (ties dropped). With few seeds the p-values are large; they are reported as they are.
* Identical picks: strategies whose cells bought the same items round by round (the table's
  ``picks`` digests) on a seed are named together ("a = b on sst2: identical picks in 10/10
  seeds"), and drawn as one line labelled with every name when they agree on every seed.
* The money panel is drawn only where money is not proportional to labels (every label the same
  price: it would repeat the labels panel).
* Outputs under ``RUN_DIR/report/``: ``curves_<panel>.png``, ``summary.csv``, ``report.md`` (links to
  the PNGs) and ``report.html`` (self-contained: the PNGs embedded as base64).
"""

from __future__ import annotations

import base64
import html
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError

__all__ = ["Report", "auc", "paired", "summarise", "write_report"]

PANEL_KEYS = ("paradigm", "dataset", "schedule", "annotator")
BASELINE = "random"


def auc(x: np.ndarray, y: np.ndarray, lo: float | None = None, hi: float | None = None) -> float:
    """Mean of ``y`` over ``[lo, hi]`` (default: the range of ``x``), linear between points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return float("nan")
    lo = x.min() if lo is None else lo
    hi = x.max() if hi is None else hi
    if hi <= lo:
        return float(y[-1]) if len(x) == 1 else float("nan")
    # The curve is linear between its points: the trapezoid rule on them (and on the two ends) is exact.
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    grid = np.unique(np.concatenate([[lo, hi], x[(x > lo) & (x < hi)]]))
    values = np.interp(grid, x, y)
    return float(np.sum((values[1:] + values[:-1]) * np.diff(grid)) / 2.0 / (hi - lo))


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """``a - b`` paired by seed: mean and sd of the differences, wins, ties, t-test and sign-test p-values
    (sd and p-values NaN from a single pair)."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    wins, losses = int(np.sum(d > 0)), int(np.sum(d < 0))
    t_p = float("nan")
    if len(d) > 1 and np.std(d) > 0:
        t_p = float(stats.ttest_rel(a, b).pvalue)
    # One seed is no test: a sign test of 1 win is p = 1 by construction, not evidence.
    sign_p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if len(d) > 1 and wins + losses else float("nan")
    return {"diff": float(d.mean()) if len(d) else float("nan"),
            "diff_sd": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
            "n": len(d), "wins": wins, "losses": losses, "t_p": t_p, "sign_p": sign_p}


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")  # one value: no spread


@dataclass
class Panel:
    keys: dict[str, Any]
    metric: str
    strategies: list[str]
    rows: list[dict] = field(default_factory=list)     # one per strategy: the summary
    curves: dict[str, dict] = field(default_factory=dict)  # strategy -> labels, spent, mean, sd
    money_range: tuple[float, float] = (0.0, 0.0)
    label_range: tuple[float, float] = (0.0, 0.0)
    currency: str = "USD"
    price_per_label: float | None = None  # money = this x labels in every row: no money panel
    identical: list[tuple[list[str], int, int]] = field(default_factory=list)  # names, seeds alike, seeds compared
    merged: list[list[str]] = field(default_factory=list)  # groups drawn as one line (alike on every seed)

    @property
    def title(self) -> str:
        k = self.keys
        return f"{k['dataset']} ({k['paradigm']}, schedule {k['schedule']}, annotator {k['annotator']})"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(str(self.keys[k]) for k in PANEL_KEYS))


def _order(strategies: list[str]) -> list[str]:
    """Random first, then curate's strategies, then peers, each in the order the table has them."""
    peers = [s for s in strategies if ":" in s]
    ours = [s for s in strategies if ":" not in s and s != BASELINE]
    return ([BASELINE] if BASELINE in strategies else []) + ours + peers


def summarise(table, metric: str = "metric") -> list[Panel]:
    """Per panel and strategy: AUC vs labels and vs money (mean ± sd over seeds), the final metric, the
    paired comparison with random, and timings."""
    if metric not in table.columns:
        numeric = [c for c in table.columns if c not in PANEL_KEYS and table[c].dtype.kind == "f"]
        raise ConfigError(f"The table has no column '{metric}'. Metric columns: {', '.join(numeric)}.")
    missing = [c for c in (*PANEL_KEYS, "strategy", "seed", "round", "labels", "spent") if c not in table.columns]
    if missing:
        raise ConfigError(f"This is not a benchmark table: columns {missing} are missing.")
    panels = []
    for keys, frame in table.groupby(list(PANEL_KEYS), sort=False):
        keys = dict(zip(PANEL_KEYS, keys, strict=True))
        strategies = _order(list(dict.fromkeys(frame["strategy"])))
        cells = {(s, int(seed)): g.sort_values("round") for (s, seed), g in frame.groupby(["strategy", "seed"], sort=False)}
        label_lo = max(float(g["labels"].min()) for g in cells.values())
        label_hi = min(float(g["labels"].max()) for g in cells.values())
        money_lo = max(float(g["spent"].min()) for g in cells.values())
        money_hi = min(float(g["spent"].max()) for g in cells.values())
        panel = Panel(keys, metric, strategies, money_range=(money_lo, money_hi), label_range=(label_lo, label_hi),
                      currency=str(frame["currency"].iloc[0]) if "currency" in frame else "USD",
                      price_per_label=_price_per_label(frame))
        per_seed: dict[str, dict[int, dict]] = {}
        for (s, seed), g in cells.items():
            x, y = g["labels"].to_numpy(float), g[metric].to_numpy(float)
            sel = g["select_seconds"].to_numpy(float)[1:] if "select_seconds" in g else np.array([])
            per_seed.setdefault(s, {})[seed] = {
                "auc": auc(x, y, label_lo, label_hi),
                "auc_money": auc(g["spent"].to_numpy(float), y, money_lo, money_hi) if money_hi > money_lo else float("nan"),
                "final": float(y[-1]), "labels": float(x[-1]), "spent": float(g["spent"].iloc[-1]),
                "select": float(np.nanmean(sel)) if len(sel) and not np.all(np.isnan(sel)) else float("nan"),
                "wall": float(g["wall_seconds"].sum()) if "wall_seconds" in g else float("nan"),
                "tokens": float(g["input_tokens"].iloc[-1] + g["output_tokens"].iloc[-1]) if "input_tokens" in g else 0.0,
            }
        for s in strategies:
            seeds = sorted(per_seed[s])
            row = {**keys, "strategy": s, "seeds": len(seeds)}
            for name in ("auc", "auc_money", "final", "spent", "select", "wall", "tokens"):
                row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd([per_seed[s][k][name] for k in seeds])
            if BASELINE in per_seed and s != BASELINE:
                common = [k for k in seeds if k in per_seed[BASELINE]]
                cmp = paired([per_seed[s][k]["auc"] for k in common], [per_seed[BASELINE][k]["auc"] for k in common])
                row.update({f"vs_random_{k}": v for k, v in cmp.items()})
            panel.rows.append(row)
            rounds = frame[frame["strategy"] == s].groupby("round")
            panel.curves[s] = {"labels": rounds["labels"].mean().to_numpy(float), "spent": rounds["spent"].mean().to_numpy(float),
                               "mean": rounds[metric].mean().to_numpy(float),
                               "sd": rounds[metric].std(ddof=1).fillna(0.0).to_numpy(float),
                               "seeds": rounds[metric].count().to_numpy(int)}
        panel.identical, panel.merged = _identical_picks(cells, strategies, panel.curves)
        panels.append(panel)
    return panels


def _price_per_label(frame) -> float | None:
    """The one price of a label when money is proportional to labels in every row (zero included)."""
    labels, spent = frame["labels"].to_numpy(float), frame["spent"].to_numpy(float)
    if not len(labels) or labels.max() <= 0:
        return None
    rate = float(spent.sum() / labels.sum())
    return rate if np.allclose(spent, rate * labels, rtol=1e-9, atol=1e-9) else None


def _identical_picks(cells: dict, strategies: list[str], curves: dict) -> tuple[list, list]:
    """Strategies that bought the same items round by round: groups of strategies alike on every
    seed they share (and on the same seeds), as ``(names, seeds alike, seeds compared)``, then pairs
    alike on some seeds only; and the groups to draw as one line (alike on every seed, the same mean
    curve). Needs the table's ``picks`` column (tables written before it have none: nothing found)."""
    picks: dict[str, dict[int, tuple]] = {}
    for (s, seed), g in cells.items():
        if "picks" not in g or g["picks"].isna().any():
            continue
        picks.setdefault(s, {})[seed] = tuple(g["picks"].astype(str))
    names = [s for s in strategies if s in picks]
    parent = {s: s for s in names}

    def root(s: str) -> str:
        while parent[s] != s:
            s = parent[s]
        return s

    partial = []
    for a, b in itertools.combinations(names, 2):
        common = sorted(set(picks[a]) & set(picks[b]))
        alike = sum(picks[a][k] == picks[b][k] for k in common)
        if common and alike == len(common) and set(picks[a]) == set(picks[b]):
            parent[root(b)] = root(a)
        elif alike:
            partial.append(([a, b], alike, len(common)))
    groups: dict[str, list[str]] = {}
    for s in names:
        groups.setdefault(root(s), []).append(s)
    whole = [(g, len(picks[g[0]]), len(picks[g[0]])) for g in groups.values() if len(g) > 1]
    merged = [g for g, _, _ in whole
              if all(np.allclose(curves[s]["mean"], curves[g[0]]["mean"], equal_nan=True) for s in g[1:])]
    return whole + partial, merged


# ---------------------------------------------------------------------------------------------- plots


def plot_panel(panel: Panel, path: Path, metric_label: str) -> None:
    """The panel's learning curves vs labels, and vs money unless money is proportional to labels;
    strategies that picked the same items on every seed drawn as one line labelled with all names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    money_panel = panel.price_per_label is None
    fig, axes = plt.subplots(1, 2 if money_panel else 1, figsize=(11 if money_panel else 6.5, 4.2), dpi=80, squeeze=False)
    axes = list(axes[0])
    colours = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Dark2").colors)
    by_strategy = {r["strategy"]: r for r in panel.rows}
    hidden = {s for group in panel.merged for s in group[1:]}
    alias = {group[0]: group for group in panel.merged}
    for i, s in enumerate(panel.strategies):
        if s in hidden:
            continue
        c = panel.curves[s]
        group = alias.get(s, [s])
        style = ({"color": "black", "linestyle": "--", "linewidth": 2.0} if BASELINE in group else
                 {"color": colours[i % len(colours)], "linestyle": ":" if all(":" in g for g in group) else "-",
                  "linewidth": 1.5})
        label = f"{' = '.join(group)} (AUC {by_strategy[s]['auc_mean']:.3f})"
        xs = [c["labels"], c["spent"]] if money_panel else [c["labels"]]
        for ax, x in zip(axes, xs, strict=True):
            ax.plot(x, c["mean"], marker="o", markersize=2.5, label=label, **style)
            ax.fill_between(x, c["mean"] - c["sd"], c["mean"] + c["sd"], color=style["color"], alpha=0.08, linewidth=0)
    axes[0].set_xlabel("labels")
    if money_panel:
        axes[1].set_xlabel(f"money spent ({panel.currency})")
    for ax in axes:
        ax.set_ylabel(metric_label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=7)
    seeds = max(r["seeds"] for r in panel.rows)
    spread = "1 seed: no spread" if seeds == 1 else f"mean ± sd over {seeds} seeds"
    fig.suptitle(f"{panel.title}: {spread}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- documents


@dataclass
class Report:
    """Blocks rendered both as Markdown and as HTML: ("h", level, text), ("p", text), ("table", header, rows),
    ("img", path, alt)."""

    blocks: list[tuple] = field(default_factory=list)

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "table":
                header, rows = block[1], block[2]
                out.append("| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|\n" +
                           "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in rows))
            elif kind == "img":
                out.append(f"![{block[2]}]({Path(block[1]).name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
               "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;"
               "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
               "img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}</style></head><body>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "p":
                text = html.escape(block[1])
                text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
                text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
                out.append(f"<p>{text}</p>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in block[2])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
                out.append(f"<img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'>")
        out.append("</body></html>")
        return "\n".join(out)


def _f(value: float, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _pm(mean: float, sd: float, digits: int = 4, *, signed: bool = False) -> str:
    """``mean ± sd``, or the mean alone where there is no spread (one seed)."""
    shown = "–" if mean is None or math.isnan(mean) else (f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}")
    return shown if sd is None or math.isnan(sd) else f"{shown} ± {sd:.{digits}f}"


def _panel_notes(panel: Panel, what: str) -> list[str]:
    """What the table under a panel's plot needs said: how its AUC is computed, on which range, its
    spread, identical picks, and why there is no money panel."""
    lo, hi = panel.label_range
    m_lo, m_hi = panel.money_range
    notes = [f"AUC (labels) = the area under each cell's curve of {what} against labels on [{lo:g}, {hi:g}] (the label "
             "range every cell of this panel covers), by the trapezoid rule on the rounds' points (the curve linear "
             f"between them and cut at both ends), divided by {hi - lo:g}: a mean {what}. AUC (money) the same against "
             f"money on [{m_lo:.2f}, {m_hi:.2f}] {panel.currency}. ± = sample sd (ddof=1) over seeds; the Δ's ± = sample "
             "sd (ddof=1) of the per-seed paired differences."]
    one = [r["strategy"] for r in panel.rows if r["seeds"] == 1]
    if one and len(one) == len(panel.rows):
        notes.append("1 seed: no spread or test.")
    elif one:
        notes.append(f"{', '.join(one)}: 1 seed: no spread or test.")
    for names, alike, compared in panel.identical:
        drawn = " (one line in the plot)" if names in panel.merged else ""
        notes.append(f"{' = '.join(names)} on {panel.keys['dataset']}: identical picks in {alike}/{compared} seeds{drawn}.")
    if panel.price_per_label is not None:
        notes.append("Nothing was charged: no money panel." if panel.price_per_label == 0 else
                     f"Money = {panel.price_per_label:.4g} {panel.currency} x labels in every cell: no money panel (it "
                     "would repeat the labels panel).")
    return notes


def _p(value: float) -> str:
    return "–" if value is None or math.isnan(value) else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")


def write_report(run_dir: str | Path, *, out: str | Path | None = None, metric: str = "metric",
                 title: str | None = None) -> Path:
    """Write the report of the benchmark table in ``run_dir``; returns the folder it is in."""
    import pandas as pd

    from curate.bench.run import read_table

    run_dir = Path(run_dir)
    table = read_table(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    panels = summarise(table, metric)
    metric_label = _metric_label(table, metric)
    cells = table.groupby(["paradigm", "dataset", "strategy", "schedule", "annotator", "seed"]).ngroups
    report = Report()
    report.blocks.append(("h", 1, title or f"Benchmark report: {run_dir.resolve().name}"))
    report.blocks.append(("p", f"From `{TABLE_NAME}` alone: {len(table)} rows (one per round) of {cells} cells; metric "
                               f"**{metric_label}**. AUC = the mean of the learning curve over the label range every cell "
                               "of a panel covers (trapezoid rule; the exact range under each table), mean ± sample sd "
                               "(ddof=1) over seeds. Δ vs random = paired AUC difference x100 on the seeds both ran; won = "
                               "seeds where the strategy's AUC beat random's; p-values: paired t-test and exact sign test "
                               "(two-sided); one seed has no spread and no test." +
                               (" Peers (`small-text:...`) run on the same embeddings, learner and seeds."
                                if table["strategy"].astype(str).str.contains(":").any() else "")))
    summary_rows = []
    overview: dict[str, dict[str, str]] = {}
    for panel in panels:
        png = out / f"curves_{panel.slug}.png"
        plot_panel(panel, png, metric_label)
        report.blocks.append(("h", 2, panel.title))
        report.blocks.append(("img", str(png), f"learning curves, {panel.title}"))
        header = ["strategy", "seeds", "AUC (labels)", "AUC (money)", "final", "Δ vs random (x100)", "won",
                  "t-test p", "sign p", "spent", "select s/round", "wall s/cell"]
        rows = []
        for r in panel.rows:
            vs = r.get("vs_random_diff")
            tested = vs is not None and r["vs_random_n"] > 1
            rows.append([r["strategy"], r["seeds"], _pm(r["auc_mean"], r["auc_sd"]),
                         _f(r["auc_money_mean"]), _pm(r["final_mean"], r["final_sd"]),
                         "–" if vs is None else _pm(100 * vs, 100 * r["vs_random_diff_sd"], 2, signed=True),
                         "–" if vs is None else f"{r['vs_random_wins']}/{r['vs_random_n']}",
                         _p(r["vs_random_t_p"]) if tested else "–", _p(r["vs_random_sign_p"]) if tested else "–",
                         _f(r["spent_mean"], 2), _f(r["select_mean"], 4), _f(r["wall_mean"], 1)])
            summary_rows.append(r)
            if vs is not None:
                overview.setdefault(r["strategy"], {})[panel.title] = f"{100 * vs:+.2f} ({r['vs_random_wins']}/{r['vs_random_n']})"
        report.blocks.append(("table", header, rows))
        report.blocks.extend(("p", line) for line in _panel_notes(panel, metric_label))
    if overview and len(panels) > 1:
        titles = [p.title for p in panels]
        report.blocks.append(("h", 2, "Overview: AUC difference to random (x100, seeds won)"))
        # A column per panel, named by what tells the panels apart (the dataset, plus the schedule
        # or annotator where a dataset has several panels).
        varying = [k for k in ("schedule", "annotator") if len({p.keys[k] for p in panels}) > 1]
        heads = [" / ".join([p.keys["dataset"], *(str(p.keys[k]) for k in varying)]) for p in panels]
        report.blocks.append(("table", ["strategy", *heads],
                              [[s, *[overview[s].get(t, "–") for t in titles]] for s in overview]))
    speed = _read_speed(run_dir)
    if speed is not None:
        report.blocks.append(("h", 2, "Selection speed and peak memory (synthetic unit vectors)"))
        report.blocks.extend(speed_blocks(speed))
    pd.DataFrame(summary_rows).to_csv(out / "summary.csv", index=False)
    (out / "report.md").write_text(report.markdown(), encoding="utf-8")
    (out / "report.html").write_text(report.html(title or f"Benchmark report: {run_dir.resolve().name}"), encoding="utf-8")
    return out


TABLE_NAME = "results.parquet"


def _metric_label(table, metric: str) -> str:
    """The name of the primary metric: the named column that ``metric`` repeats (runners write both)."""
    if metric != "metric":
        return metric
    for column in table.columns[table.columns.get_loc("metric") + 1:]:
        if table[column].equals(table["metric"]):
            return str(column)
    return "metric"


def _read_speed(run_dir: Path):
    import pandas as pd

    if (run_dir / "speed.parquet").exists():
        return pd.read_parquet(run_dir / "speed.parquet")
    if (run_dir / "speed.csv").exists():
        return pd.read_csv(run_dir / "speed.csv")
    return None


def speed_blocks(speed) -> list[tuple]:
    sizes = sorted(speed["size"].unique())
    header = ["strategy", *[f"{n:,}: s" for n in sizes], *[f"{n:,}: peak MiB" for n in sizes]]
    rows = []
    for s in dict.fromkeys(speed["strategy"]):
        got = speed[speed["strategy"] == s].set_index("size")
        times = [(_f(got.loc[n, "seconds"], 3) if n in got.index and not _skipped(got.loc[n]) else "skipped")
                 for n in sizes]
        mems = [(_f(got.loc[n, "peak_mib"], 1) if n in got.index and not _skipped(got.loc[n]) else "–") for n in sizes]
        rows.append([s, *times, *mems])
    first = speed.iloc[0]
    note = (f"One selection of {int(first['budget'])} items from a pool of N unit vectors (dim {int(first['dim'])}, "
            f"{int(first['labeled'])} labelled, {int(first['classes'])} classes), best of {int(first['repeats'])}; peak "
            "MiB = tracemalloc peak of the call (numpy and Python allocations). 'skipped' = above the strategy's "
            "max_size in the recipe.")
    skipped = speed[speed["note"].astype(str).str.len() > 0] if "note" in speed else speed.iloc[0:0]
    blocks: list[tuple] = [("table", header, rows), ("p", note)]
    if len(skipped):
        blocks.append(("p", "; ".join(sorted(set(f"{r.strategy} at {int(r.size):,}: {r.note}" for r in skipped.itertuples())))))
    return blocks


def _skipped(row) -> bool:
    return bool(row.get("skipped", False))
