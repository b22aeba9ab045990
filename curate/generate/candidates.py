"""Generated candidates and the text clean-up every generator shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Candidate", "clean_generation"]


@dataclass(frozen=True)
class Candidate:
    """A new example written by an LLM (x' not in the pool), before or after filtering."""

    text: str
    label: Any | None = None          # the label it was asked to have (None: to be annotated)
    source: str = "generated"         # which generator wrote it
    meta: dict = field(default_factory=dict)

    def to_row(self) -> dict:
        row = {"text": self.text, "source": self.source}
        if self.label is not None:
            row["label"] = self.label
        return row


_LEAD = re.compile(r"^\s*(?:\d+[.)]|[-*•]|example\s*\d*\s*:|text\s*:|review\s*:|question\s*:|task\s*:)\s*", re.I)


def clean_generation(text: str) -> str:
    """The first non-empty line, without list numbering, a leading 'Example:'-style tag or quotes."""
    for line in text.split("\n"):  # not splitlines(): U+2028 / U+0085 inside a line are part of it
        line = line.removesuffix("\r")
        line = _LEAD.sub("", line).strip().strip('"').strip("'").strip()
        if line:
            return line
    return ""
