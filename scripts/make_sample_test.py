"""Generate curate's shipped held-out review set (``curate/data/sample_test.jsonl``).

The pool (``sample_pool.jsonl``) was written by hand; this held-out set is generated from
templates so that the demo's learning curve is measured on reviews the loop never sees.
Deterministic: re-running it writes the same file.
"""

import json
import random
from pathlib import Path

PRODUCTS = ["phone", "laptop", "blender", "jacket", "hotel", "restaurant", "film", "novel", "headphones",
            "backpack", "coffee shop", "museum tour", "app", "camera", "sofa", "bike"]
GOOD = ["works perfectly", "exceeded every expectation", "is a joy to use", "was worth every penny",
        "made my week", "feels built to last", "left us delighted", "is the best I have tried"]
BAD = ["broke within a week", "was a waste of money", "left us disappointed", "is painfully slow",
       "fell apart on the first day", "made me angry", "is the worst I have tried", "never worked properly"]
GOOD_DETAIL = ["friendly staff", "fast delivery", "a lovely design", "clear instructions", "great value"]
BAD_DETAIL = ["rude staff", "a late delivery", "an ugly design", "confusing instructions", "a high price"]


def review(rng: random.Random, label: str) -> str:
    product = rng.choice(PRODUCTS)
    if label == "positive":
        verdict, detail, twist = rng.choice(GOOD), rng.choice(GOOD_DETAIL), rng.choice(BAD_DETAIL)
    else:
        verdict, detail, twist = rng.choice(BAD), rng.choice(BAD_DETAIL), rng.choice(GOOD_DETAIL)
    form = rng.randrange(3)
    if form == 0:
        return f"The {product} {verdict}."
    if form == 1:
        return f"The {product} {verdict}, with {detail}."
    return f"Despite {twist}, the {product} {verdict}."


def main() -> None:
    rng = random.Random(2026)
    rows, seen = [], set()
    while len(rows) < 120:
        label = "positive" if len(rows) % 2 == 0 else "negative"
        text = review(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append({"id": f"t{len(rows):03d}", "text": text, "label": label})
    out = Path(__file__).resolve().parents[1] / "curate" / "data" / "sample_test.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} reviews to {out}")


if __name__ == "__main__":
    main()
