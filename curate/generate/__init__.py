"""Querying by generation: new examples outside the pool, checked by rejection sampling.

``Generator`` writes candidates (seed pools, label-conditioned, coverage-steered, Self-Instruct);
``generate_accepted`` keeps generating until enough pass the filters (``LengthFilter``,
``FormatFilter``, ``DuplicateFilter``, ``LabelConsistencyFilter``, ``JudgeFilter``) or a cost cap
stops it; ``coverage_report`` is the CAL-style bias check; ``CascadeAnnotator`` the NoiseAL-style
cheap-then-strong cascade; ``GenerationQuery`` makes generation a query source of
:class:`~curate.loop.ActiveLoop` (accepted candidates join the pool mid-run).
"""

from curate.generate.bias import ClusterReport, cluster_pool, coverage_report
from curate.generate.candidates import Candidate, clean_generation
from curate.generate.cascade import CascadeAnnotator
from curate.generate.filters import (
    DuplicateFilter,
    FilterReport,
    FormatFilter,
    JudgeFilter,
    LabelConsistencyFilter,
    LengthFilter,
    apply_filters,
    standard_filters,
    worst_case_tokens,
)
from curate.generate.generator import Generator
from curate.generate.query import GenerationContext, GenerationQuery
from curate.generate.sampling import GenerationResult, generate_accepted

__all__ = [
    "Candidate", "CascadeAnnotator", "ClusterReport", "DuplicateFilter", "FilterReport", "FormatFilter",
    "GenerationContext", "GenerationQuery", "GenerationResult", "Generator", "JudgeFilter", "LabelConsistencyFilter", "LengthFilter", "apply_filters",
    "clean_generation", "cluster_pool", "coverage_report", "generate_accepted", "standard_filters", "worst_case_tokens",
]
