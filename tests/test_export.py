"""Export to TRL's formats: the columns its trainers read."""

from __future__ import annotations

import pytest

from curate.errors import ConfigError, DataError
from curate.export import save_dataset, to_trl
from curate.pool import load_pool


def test_messages_and_prompt_completion_keep_provenance():
    from trl.data_utils import is_conversational

    pool = load_pool([{"prompt": "Add 2 and 2.", "response": "4", "source": "teacher"}])
    msgs = to_trl(pool, "messages", system_prompt="Be brief.")
    assert msgs[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 2."},
                                   {"role": "assistant", "content": "4"}]
    assert is_conversational(msgs[0]) and msgs[0]["source"] == "teacher" and msgs[0]["id"] == 0
    pc = to_trl(pool, "prompt_completion")
    assert pc[0]["prompt"] == "Add 2 and 2." and pc[0]["completion"] == "4" and not is_conversational(pc[0])


def test_preference_and_errors():
    pool = load_pool([{"prompt": "p", "chosen": "good", "rejected": "bad"}])
    assert set(to_trl(pool, "preference").column_names) >= {"prompt", "chosen", "rejected"}
    with pytest.raises(DataError, match="needs columns prompt, response; missing response"):
        to_trl(pool, "messages")
    with pytest.raises(ConfigError, match="Did you mean 'preference'"):
        to_trl(pool, "preferences")


@pytest.mark.parametrize("name", ["out.jsonl", "out.parquet", "outdir"])
def test_save_round_trip(tmp_path, name):
    pool = load_pool([{"prompt": "p1", "response": "r1"}, {"prompt": "p2", "response": "r2"}])
    path = save_dataset(to_trl(pool, "prompt_completion"), tmp_path / name)
    again = load_pool(path, columns={"response": "completion"})
    assert again.column("prompt") == ["p1", "p2"] and again.column("response") == ["r1", "r2"]
    with pytest.raises(ConfigError, match="Cannot save"):
        save_dataset(pool, tmp_path / "x.txt")
