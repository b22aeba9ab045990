"""CAL-style coverage and bias check: where does the labelled set under-cover or skew the pool?

The pool is clustered on the shared index; each cluster reports its size, how many of its items
are labelled and how their labels split. Clusters with no labels, or whose labels are dominated by
one class, are where coverage-steered generation should write next.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.index import kmeans

__all__ = ["ClusterReport", "cluster_pool", "coverage_report"]


@dataclass(frozen=True)
class ClusterReport:
    cluster: int
    size: int
    labelled: int
    central_ids: np.ndarray                 # pool ids nearest the centroid, nearest first
    label_counts: dict = field(default_factory=dict)

    @property
    def skew(self) -> float:
        """Share of the most common label among the labelled members (0 when none)."""
        return max(self.label_counts.values()) / self.labelled if self.labelled else 0.0


def cluster_pool(index, labeled_ids: Sequence[int], *, clusters: int | None = None, rng: np.random.Generator,
                 labels: Mapping[int, Any] | None = None, central: int = 5) -> list[ClusterReport]:
    """k-means over the index's vectors (``clusters`` defaults to sqrt(n/2)), by the shared
    :func:`curate.index.kmeans`: its k-means++ seeds give small, well separated regions of the pool a
    cluster of their own, which is what a coverage check is for; everything is drawn from ``rng``."""
    x = index.vectors
    n = len(x)
    k = clusters or max(2, int(np.sqrt(n / 2)))
    k = min(k, n)
    centroids, assign = kmeans(x, k, rng=rng, n_iter=20)
    ids = index.ids
    labelled = set(int(i) for i in labeled_ids)
    out = []
    for c in range(k):
        members = np.flatnonzero(assign == c)
        if len(members) == 0:
            continue
        # Squared distance to the centroid orders members by centrality (for unit vectors the same
        # order as the inner product with it; unlike that, also right for unnormalised indexes).
        d2 = ((x[members] - centroids[c]) ** 2).sum(axis=1)
        order = members[np.argsort(d2, kind="stable")]
        member_ids = ids[order]
        mine = [int(i) for i in member_ids if int(i) in labelled]
        counts = dict(Counter(labels[i] for i in mine)) if labels is not None else {}
        out.append(ClusterReport(c, len(members), len(mine), member_ids[:central], counts))
    return out


def coverage_report(index, labels: Mapping[int, Any], *, clusters: int | None = None, rng: np.random.Generator,
                    skew_threshold: float = 0.9) -> dict:
    """Clusters with no labels, clusters whose labels are skewed, and a printable summary."""
    reports = cluster_pool(index, list(labels), clusters=clusters, rng=rng, labels=labels)
    empty = [r for r in reports if r.labelled == 0]
    skewed = [r for r in reports if r.labelled >= 3 and r.skew >= skew_threshold]
    lines = [f"{len(reports)} clusters; {len(empty)} without labels ({sum(r.size for r in empty)} items); "
             f"{len(skewed)} with one label at >= {skew_threshold:.0%} of their labels"]
    for r in sorted(empty, key=lambda r: -r.size)[:10]:
        lines.append(f"  cluster {r.cluster}: {r.size} items, no labels")
    for r in skewed[:10]:
        lines.append(f"  cluster {r.cluster}: {r.size} items, labels {r.label_counts}")
    return {"clusters": reports, "unlabelled": empty, "skewed": skewed, "summary": "\n".join(lines)}
