"""Annotators: who labels the items a strategy chose — gold data, an LLM, people, or both.

All share :class:`~curate.annotate.base.Annotator`: ``annotate(pool, ids, labeled=...)`` yields one
:class:`~curate.annotate.base.Annotation` per item as it is bought, with its cost.
"""

from curate.annotate.base import Annotation, Annotator, AwaitingHumanLabels, GoldAnnotator
from curate.annotate.human import HumanQueueAnnotator, export_batch, import_answers
from curate.annotate.hybrid import HybridAnnotator, agreement, calibrate_threshold
from curate.annotate.llm import LLMAnnotator, parse_label
from curate.annotate.terminal import label_interactively, run_labeller

__all__ = [
    "Annotation", "Annotator", "AwaitingHumanLabels", "GoldAnnotator", "HumanQueueAnnotator", "HybridAnnotator",
    "LLMAnnotator", "agreement", "calibrate_threshold", "export_batch", "import_answers", "label_interactively",
    "parse_label", "run_labeller",
]
