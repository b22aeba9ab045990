"""Generation of new examples outside the pool: the "from selection to generation" query source.

One :class:`Generator` wraps any LM backend and writes candidates four ways: a seed pool for a
task and label set (cold start), examples of a given class in the style of some examples, new
examples in regions the labelled set leaves uncovered (via the shared index), and new
instructions or prompts from seed tasks (Self-Instruct). Every candidate then goes through the
rejection-sampling filters in :mod:`curate.generate.filters` before it can enter a pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from curate.errors import ConfigError
from curate.generate.candidates import Candidate, clean_generation

__all__ = ["Generator", "TOPIC_HINTS"]

# Varied seeds: each prompt names a different topic, so a small model does not write the same
# sentence again and again at a given temperature.
TOPIC_HINTS = ("food", "travel", "work", "sports", "music", "films", "books", "technology", "health", "shopping",
               "weather", "school", "money", "family", "science", "history", "animals", "cars", "games", "art")


class Generator:
    """Writes candidates with ``backend``; ``temperature``/``top_p`` diversify, ``seed`` repeats."""

    def __init__(self, backend, *, temperature: float = 0.9, top_p: float = 0.95, max_new_tokens: int = 48,
                 chat: bool = True) -> None:
        if temperature < 0:
            raise ConfigError(f"The 'temperature' parameter must be >= 0. Got {temperature} instead.")
        self.backend = backend
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.chat = chat

    # ------------------------------------------------------------------ prompts -> texts

    def _prompt(self, content: str) -> str:
        return self.backend.chat_prompt([{"role": "user", "content": content}]) if self.chat else content

    def _write(self, contents: list[str], rng: np.random.Generator) -> list[str]:
        prompts = [self._prompt(c) for c in contents]
        outs = self.backend.generate(prompts, n=1, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                     top_p=self.top_p, seed=int(rng.integers(2**31 - 1)))
        return [clean_generation(row[0].text) for row in outs]

    # ------------------------------------------------------------------ generators

    def for_labels(self, task: str, labels: Sequence[Any], n: int, *, rng: np.random.Generator,
                   examples: Mapping[Any, Sequence[str]] | None = None, shots: int = 3) -> list[Candidate]:
        """``n`` examples with intended labels, balanced over ``labels`` (round robin). Without
        ``examples`` this is the cold-start seed pool; with them, label-conditioned generation in
        their style."""
        if not labels:
            raise ConfigError("for_labels needs at least one label.")
        contents, targets = [], []
        for i in range(n):
            label = labels[i % len(labels)]
            topic = TOPIC_HINTS[int(rng.integers(len(TOPIC_HINTS)))]
            shown = list((examples or {}).get(label, []))
            if shown:
                picks = [shown[j] for j in rng.permutation(len(shown))[:shots]]
                listing = "\n".join(f"- {t}" for t in picks)
                content = (f"Task: {task}\nHere are examples labelled '{label}':\n{listing}\n"
                           f"Write one new, different example labelled '{label}', about {topic}. "
                           "Reply with the example only, on one line.")
            else:
                content = (f"Task: {task}\nWrite one short, realistic example whose label is '{label}'. "
                           f"Make it about {topic}. Reply with the example only, on one line.")
            contents.append(content)
            targets.append(label)
        texts = self._write(contents, rng)
        source = "label_conditioned" if examples else "seed"
        return [Candidate(t, lab, source, {"prompt": c}) for t, lab, c in zip(texts, targets, contents, strict=True)]

    def coverage(self, pool, index, labeled_ids: Sequence[int], n: int, *, rng: np.random.Generator,
                 task: str = "", clusters: int | None = None, shots: int = 3) -> list[Candidate]:
        """``n`` unlabelled examples written near pool regions with no labelled member: the pool is
        clustered on the index, and each uncovered cluster's most central items are the examples."""
        from curate.generate.bias import cluster_pool

        report = cluster_pool(index, labeled_ids, clusters=clusters, rng=rng)
        targets = [c for c in report if c.labelled == 0] or sorted(report, key=lambda c: c.labelled)[:1]
        contents, metas = [], []
        for i in range(n):
            cluster = targets[i % len(targets)]
            picks = cluster.central_ids[:shots]
            listing = "\n".join(f"- {t}" for t in pool.texts(picks))
            contents.append(f"{'Task: ' + task + chr(10) if task else ''}Here are some examples:\n{listing}\n"
                             "Write one new, different example of the same kind. Reply with the example only, on one line.")
            metas.append({"cluster": cluster.cluster, "near_ids": [int(x) for x in picks]})
        texts = self._write(contents, rng)
        return [Candidate(t, None, "coverage", m) for t, m in zip(texts, metas, strict=True)]

    def instructions(self, seed_tasks: Sequence[str], n: int, *, rng: np.random.Generator, shots: int = 4,
                     kind: str = "task instruction") -> list[Candidate]:
        """Self-Instruct-style: show ``shots`` random seed tasks, ask for a new one. ``kind`` names
        what is wanted ("task instruction" for SFT, "user prompt" for preference data)."""
        if len(seed_tasks) < 1:
            raise ConfigError("instructions() needs at least one seed task.")
        contents = []
        for _ in range(n):
            picks = [seed_tasks[j] for j in rng.permutation(len(seed_tasks))[:shots]]
            listing = "\n".join(f"{j + 1}. {t}" for j, t in enumerate(picks))
            contents.append(f"Here are some examples of a {kind}:\n{listing}\n"
                            f"Write one new {kind} that is different from all of these. Reply with it only, on one line.")
        texts = self._write(contents, rng)
        return [Candidate(t, None, "self_instruct", {"prompt": c}) for t, c in zip(texts, contents, strict=True)]
