"""Writes ``instructions.jsonl`` / ``instructions_test.jsonl``: small instruction-response pairs
curate generates itself (arithmetic, string edits, sorting, counting, short facts about the
numbers), so SFT and distillation examples run without any download.

    python -m curate.data.make_instructions     # rewrites both files (deterministic, seed 0)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ["apple", "river", "garden", "window", "silver", "planet", "candle", "forest", "pencil", "mirror",
         "bridge", "market", "rocket", "violin", "island", "winter", "coffee", "marble", "tunnel", "meadow"]


def _task(rng: random.Random) -> tuple[str, str, str]:
    kind = rng.choice(["add", "multiply", "reverse", "upper", "sort", "count", "compare", "even"])
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    word = rng.choice(WORDS)
    if kind == "add":
        return kind, f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    if kind == "multiply":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return kind, f"What is {a} times {b}?", f"{a} times {b} is {a * b}."
    if kind == "reverse":
        return kind, f"Write the word '{word}' backwards.", f"'{word}' backwards is '{word[::-1]}'."
    if kind == "upper":
        pair = f"{word} {rng.choice(WORDS)}"
        return kind, f"Write '{pair}' in capital letters.", pair.upper()
    if kind == "sort":
        nums = rng.sample(range(1, 100), 4)
        return kind, f"Sort these numbers from smallest to largest: {', '.join(map(str, nums))}.", \
            ", ".join(map(str, sorted(nums)))
    if kind == "count":
        return kind, f"How many letters are in the word '{word}'?", f"The word '{word}' has {len(word)} letters."
    if kind == "compare":
        if a == b:
            b += 1
        return kind, f"Which is larger, {a} or {b}?", f"{max(a, b)} is larger than {min(a, b)}."
    parity = "even" if a % 2 == 0 else "odd"
    return kind, f"Is {a} even or odd?", f"{a} is {parity}."


def make(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        kind, prompt, response = _task(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"id": f"ins-{seed}-{len(rows)}", "task": kind, "instruction": prompt, "output": response})
    return rows


def main() -> None:
    here = Path(__file__).parent
    for name, n, seed in (("instructions.jsonl", 240, 0), ("instructions_test.jsonl", 60, 1)):
        rows = make(n, seed)
        (here / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} rows to {here / name}")


if __name__ == "__main__":
    main()
