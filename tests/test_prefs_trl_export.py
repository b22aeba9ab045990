"""``curate prefs export`` is TRL's contract exactly (issue 20): the HH-RLHF turn markers survive
into the training text, curate's own columns never reach a TRL trainer's batch or loss, and the
unpaired (KTO) form loads in ``KTOTrainer``.

The export comes from the real path: an HH-style ``.jsonl.gz`` read by the ``hh_rlhf`` reader, a
``curate prefs run`` (embedding reward model, gold labels), ``curate prefs export``; it is then fed
to TRL's own trainers on the tiny model of ``tiny_lm_dir`` for one step each.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from curate.paradigms.preference import pairs_from_preferences, preference_dataset, read_hh_rlhf
from curate.paradigms.preference.export import METADATA, PREFIX, kto_dataset
from test_preference import HashEmbedder

TURN = "\n\nAssistant:"
# (the shared conversation, the chosen reply, the rejected reply); replies keep HH's leading space.
DIALOGUES = [
    ("\n\nHuman: what can I do with pens?\n\nAssistant: Draw, write, or prank a friend."
     "\n\nHuman: okay some of these do not have anything to do with pens", " No, sorry!", " Pens are boring."),
    ("\n\nHuman: how do I boil an egg?", " Put it in boiling water for eight minutes.", " No."),
    ("\n\nHuman: what is the capital of france?", " Paris.", " I like cheese."),
    ("\n\nHuman: tell me a joke\n\nAssistant: Why did the cat sit on the mat?\n\nHuman: why?",
     " To keep its paws warm.", " Go away."),
    ("\n\nHuman: is the film good?", " Yes, it was wonderful and moving.", " Terrible plot."),
    ("\n\nHuman: count to five", " 1 2 3 4 5", " 0 9 8"),
    ("\n\nHuman: describe the phone", " A great phone with a long battery life.", " It is a phone."),
    ("\n\nHuman: was the food good?", " The food was cold and the service rude.", " Maybe."),
]
TRANSCRIPTS = {(c + TURN + a) for c, a, _ in DIALOGUES} | {(c + TURN + r) for c, _, r in DIALOGUES}
TRL_PAIRED = ["prompt", "chosen", "rejected"]
CURATE = [PREFIX + k for k in METADATA]
TRAIN = {"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "use_cpu": True, "report_to": [],
         "save_strategy": "no", "logging_strategy": "no", "disable_tqdm": True, "seed": 0, "dataloader_num_workers": 0}


def write_hh(path: Path) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for context, chosen, rejected in DIALOGUES:
            f.write(json.dumps({"chosen": context + TURN + chosen, "rejected": context + TURN + rejected}) + "\n")
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A ``curate prefs run`` on the HH-style file, then both exports through the CLI."""
    import curate.embed
    from curate.cli import main

    tmp = tmp_path_factory.mktemp("prefs-trl")
    hh = write_hh(tmp / "hh.jsonl.gz")
    recipe = tmp / "r.yaml"
    recipe.write_text(f"pool: {{path: {hh}, format: hh_rlhf}}\n"
                      "acquire: {init_size: 4, strategy: disagreement, batch_size: 2}\n"
                      "learner: {kind: reward_model, members: 2}\nprices: {human_per_label: 0.5}\nstop: {rounds: 3}\n")
    out = tmp / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(curate.embed, "load_embedder", lambda *a, **k: HashEmbedder())
        assert main(["--quiet", "prefs", "run", str(recipe), "--out", str(out)]) == 0
        assert main(["--quiet", "prefs", "export", str(out), "--out", str(tmp / "pairs.jsonl")]) == 0
        assert main(["--quiet", "prefs", "export", str(out), "--format", "kto", "--out", str(tmp / "kto.jsonl")]) == 0
        assert main(["--quiet", "prefs", "export", str(out), "--format", "kto"]) == 0  # default: beside the run's file
    return {"pairs": tmp / "pairs.jsonl", "kto": tmp / "kto.jsonl", "run": out}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def as_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)


def tokenizer_of(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


# ---------------------------------------------------------------------------------------------- data, no model


def test_hh_prompts_keep_their_turn_markers(tmp_path):
    rows = read_hh_rlhf(write_hh(tmp_path / "hh.jsonl.gz"))
    assert len(rows) == len(DIALOGUES)
    for row, (context, chosen, rejected) in zip(rows, DIALOGUES, strict=True):
        assert row["prompt"] == context + TURN and row["prompt"].endswith(TURN)
        assert (row["chosen"], row["rejected"]) == (chosen, rejected)
        assert row["prompt"] + row["chosen"] in TRANSCRIPTS and row["prompt"] + row["rejected"] in TRANSCRIPTS


@pytest.mark.data
def test_real_hh_rlhf_prompt_plus_reply_is_the_transcript(shared_data):
    path = shared_data / "hh_rlhf" / "harmless-base" / "test.jsonl.gz"
    original = {json.loads(line)["chosen"] for line in gzip.open(path, "rt", encoding="utf-8")}
    rows = read_hh_rlhf(path)
    assert len(rows) == 2303  # left out: 5 pairs whose dialogues differ before the last reply, 4 empty replies
    assert all(r["prompt"].endswith(TURN) and r["prompt"] + r["chosen"] in original for r in rows)


def test_export_columns_are_trl_or_curate_prefixed():
    pool = pairs_from_preferences([{"prompt": c + TURN, "chosen": a, "rejected": r} for c, a, r in DIALOGUES], seed=1)
    gold = pool.column("label")
    labels = {i: gold[i] for i in range(6)} | {6: "tie"}
    margins = np.linspace(-1.0, 1.0, len(pool))
    info = {i: {"judge": "human", "confidence": 1.0, "round": 0, "strategy": "RandomSampling", "note": ""}
            for i in labels}
    data = preference_dataset(pool, labels, provenance=info, margins=margins)
    assert data.column_names == TRL_PAIRED + CURATE and len(data) == 6  # the tie is left out
    for row in data:
        i = row["curate_pair_id"]
        assert row["curate_margin"] == pytest.approx(margins[i] if labels[i] == "a" else -margins[i])
        assert row["prompt"] + row["chosen"] in TRANSCRIPTS and row["curate_strategy"] == "RandomSampling"

    kto = kto_dataset(data)
    assert kto.column_names == ["prompt", "completion", "label"] + CURATE and len(kto) == 12
    assert kto.features["label"].dtype == "bool" and kto["label"] == [True] * 6 + [False] * 6
    # The same layout as TRL's own unpairing, column for column.
    from trl.data_utils import unpair_preference_dataset

    assert kto.to_list() == unpair_preference_dataset(data).select_columns(kto.column_names).to_list()
    assert len(kto_dataset([])) == 0 and len(preference_dataset(pool, {})) == 0


# ---------------------------------------------------------------------------------------------- the CLI's files


def test_cli_exports_paired_and_unpaired_files(exported):
    pairs, kto = read_jsonl(exported["pairs"]), read_jsonl(exported["kto"])
    assert len(pairs) == len(DIALOGUES) and list(pairs[0]) == TRL_PAIRED + CURATE
    assert all(r["prompt"].endswith(TURN) and r["prompt"] + r["chosen"] in TRANSCRIPTS for r in pairs)
    assert all(r["curate_judge"] == "human" and r["curate_margin"] is not None for r in pairs)
    assert len(kto) == 2 * len(pairs) and list(kto[0]) == ["prompt", "completion", "label"] + CURATE
    assert [r["completion"] for r in kto] == [r["chosen"] for r in pairs] + [r["rejected"] for r in pairs]
    assert [r["label"] for r in kto] == [True] * len(pairs) + [False] * len(pairs)
    assert read_jsonl(exported["run"] / "preferences.kto.jsonl") == kto


# ---------------------------------------------------------------------------------------------- TRL's trainers


def test_dpo_trainer_trains_across_the_kept_turn_boundary(exported, tiny_lm_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    rows = read_jsonl(exported["pairs"])
    tokenizer = tokenizer_of(tiny_lm_dir)
    trainer = DPOTrainer(model=str(tiny_lm_dir), args=DPOConfig(output_dir=str(tmp_path), beta=0.1, **TRAIN),
                         train_dataset=as_dataset(rows), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask"}  # no curate column, no margin
    # The collated batch holds [chosen of each row..., rejected of each row...]; decode what it trains on.
    texts = {tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(batch["input_ids"], batch["attention_mask"],
                                                                       strict=True)}
    eos = tokenizer.eos_token
    by_text = {r["prompt"] + r[k] + eos: r for r in rows for k in ("chosen", "rejected")}
    assert texts <= set(by_text) and len(texts) == 4
    for text in texts:
        row = by_text[text]
        assert text.startswith(row["prompt"]) and row["prompt"].endswith(TURN)
        assert TURN + " " in text  # the reply follows "Assistant:" (the user saw "...do with pensNo, sorry!")
    tokenized = trainer.train_dataset
    joined = [tokenizer.decode(p + c) for p, c in zip(tokenized["prompt_ids"], tokenized["chosen_ids"], strict=True)]
    assert not any("pensNo" in t for t in joined) and any("with pens" + TURN + " No, sorry!" in t for t in joined)
    # The completion mask starts right after the marker: the prompt ends on a token boundary.
    first = batch["input_ids"][0][batch["completion_mask"][0].bool()]
    assert tokenizer.decode(first).startswith(" ")
    result = trainer.train()
    assert trainer.state.global_step == 1 and np.isfinite(result.training_loss)


def test_reward_trainer_never_sees_curate_margin(exported, tiny_lm_dir, tmp_path):
    from trl import RewardConfig, RewardTrainer

    rows = read_jsonl(exported["pairs"])
    tokenizer = tokenizer_of(tiny_lm_dir)

    def trainer_on(data, folder):
        return RewardTrainer(model=str(tiny_lm_dir), args=RewardConfig(output_dir=str(folder), **TRAIN),
                             train_dataset=data, processing_class=tokenizer)

    trainer = trainer_on(as_dataset(rows), tmp_path / "ours")
    batch = next(iter(trainer.get_train_dataloader()))
    assert "margin" not in batch and not any(k.startswith(PREFIX) for k in batch)
    assert set(trainer.train_dataset.column_names).isdisjoint(["margin"])
    result = trainer.train()
    assert trainer.state.global_step == 1 and np.isfinite(result.training_loss)

    # Why the prefix: the same margins under TRL's name would reach the loss (the old export's defect).
    legacy = as_dataset([{**{k: r[k] for k in TRL_PAIRED}, "margin": r["curate_margin"]} for r in rows])
    batch = next(iter(trainer_on(legacy, tmp_path / "legacy").get_train_dataloader()))
    assert "margin" in batch


def test_kto_export_trains_in_kto_trainer(exported, tiny_lm_dir, tmp_path):
    from trl import KTOConfig, KTOTrainer

    rows = read_jsonl(exported["kto"])
    tokenizer = tokenizer_of(tiny_lm_dir)
    trainer = KTOTrainer(model=str(tiny_lm_dir), args=KTOConfig(output_dir=str(tmp_path), beta=0.1, **TRAIN),
                         train_dataset=as_dataset(rows), processing_class=tokenizer)
    assert sum(trainer.train_dataset["label"]) == len(rows) // 2
    batch = next(iter(trainer.get_train_dataloader()))
    assert "label" in batch and not any(k.startswith(PREFIX) for k in batch)
    decoded = tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert decoded == rows[0]["prompt"] + rows[0]["completion"] + tokenizer.eos_token
    result = trainer.train()
    assert trainer.state.global_step == 1 and np.isfinite(result.training_loss)
