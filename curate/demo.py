"""``curate demo``: the main job on the embedded models and the project's own sample pool.

Load the pool, embed and index it, ask the LM how likely each review is positive or negative,
then pick the batch worth labelling first: the reviews the LM is least sure about (small margin
between its two class probabilities), weighted by how typical they are of the pool (density on the
index), so that outliers do not crowd out representative examples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = ["DemoResult", "demo_defaults", "run_demo", "sample_pool_path"]

LABELS = ("positive", "negative")


def sample_pool_path() -> str:
    """The 64 short reviews curate ships (written for the project; ``kind`` marks mixed ones)."""
    from curate.data import sample_path

    return sample_path("reviews")


def demo_defaults() -> dict:
    """The demo's settings from the shipped recipe ``recipes/demo.yaml``."""
    import yaml

    from curate.errors import ConfigError

    text = (resources.files("curate.recipes") / "demo.yaml").read_text()
    settings = (yaml.safe_load(text) or {}).get("demo", {})
    known = {"budget", "lm", "embedder", "density_weight", "device"}
    unknown = set(settings) - known
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in recipes/demo.yaml; known: {sorted(known)}.")
    return settings


def sentiment_prompt(backend, text: str) -> str:
    question = f"Is the sentiment of this review positive or negative?\nReview: {text}\nAnswer with one word."
    return backend.chat_prompt([{"role": "user", "content": question}])


@dataclass
class DemoResult:
    ids: np.ndarray          # selected pool ids, best first
    table: list[dict]        # one row per selected item
    mixed_share_pool: float  # share of 'mixed' reviews in the pool
    mixed_share_batch: float
    timings: dict[str, float]


def run_demo(*, budget: int = 8, lm: str | None = None, embedder: str | None = None, density_weight: float = 1.0,
             device: str = "auto") -> DemoResult:
    from curate.backends import load_backend
    from curate.embed import load_embedder
    from curate.index import EmbeddingIndex
    from curate.models import DEFAULT_EMBEDDER, DEFAULT_LM
    from curate.pool import load_pool

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    pool = load_pool(sample_pool_path(), id_column="id", require=("text",))
    enc = load_embedder(embedder or DEFAULT_EMBEDDER)
    index = EmbeddingIndex.from_pool(pool, enc)
    timings["embed+index"] = time.perf_counter() - clock

    clock = time.perf_counter()
    backend = load_backend("hf", lm or DEFAULT_LM, device=device)
    texts = pool.texts()
    # The answer follows "assistant\n", so the labels are scored without a leading space.
    logp = backend.option_logprobs([sentiment_prompt(backend, t) for t in texts], list(LABELS))
    probs = np.exp(logp)
    timings["lm scoring"] = time.perf_counter() - clock

    sorted_p = np.sort(probs, axis=1)
    margin = sorted_p[:, -1] - sorted_p[:, -2]
    density = index.density(pool.ids, k=5)
    # Information density (Settles & Craven 2008): uncertainty x representativeness^beta.
    score = (1.0 - margin) * np.clip(density, 1e-6, None) ** density_weight
    order = np.argsort(-score, kind="stable")[:budget]
    kinds = pool.column("kind")
    keys = pool.column("key")
    table = [{"rank": r + 1, "key": keys[i], "p_positive": float(probs[i, 0]), "margin": float(margin[i]),
              "density": float(density[i]), "score": float(score[i]), "kind": kinds[i], "text": texts[i]}
             for r, i in enumerate(order)]
    mixed = np.array([k == "mixed" for k in kinds])
    return DemoResult(ids=pool.ids[order], table=table, mixed_share_pool=float(mixed.mean()),
                      mixed_share_batch=float(mixed[order].mean()), timings=timings)


def format_table(result: DemoResult, width: int = 60) -> str:
    head = f"{'#':>2}  {'id':<5} {'P(pos)':>6} {'margin':>6} {'dens':>5} {'score':>5}  {'kind':<6} text"
    lines = [head, "-" * len(head)]
    for row in result.table:
        text = row["text"] if len(row["text"]) <= width else row["text"][: width - 1] + "…"
        lines.append(f"{row['rank']:>2}  {row['key']:<5} {row['p_positive']:>6.2f} {row['margin']:>6.2f} "
                     f"{row['density']:>5.2f} {row['score']:>5.2f}  {row['kind']:<6} {text}")
    return "\n".join(lines)
