"""Annotators: who labels the items a strategy chose — gold data, an LLM, people, or both.

All share :class:`~curate.annotate.base.Annotator`: ``annotate(pool, ids, labeled=...)`` yields one
:class:`~curate.annotate.base.Annotation` per item as it is bought, with its cost.
"""

from curate.annotate.base import Annotation, Annotator, AwaitingHumanLabels, GoldAnnotator

__all__ = ["Annotation", "Annotator", "AwaitingHumanLabels", "GoldAnnotator"]
