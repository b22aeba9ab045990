"""Pools: every format, role mapping, stable ids, and clear errors that lose nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from curate.errors import ConfigError, DataError
from curate.pool import load_pool

ROWS = [
    {"sentence": "good film", "label": 1, "uid": "a"},
    {"sentence": "bad film", "label": 0, "uid": "b"},
    {"sentence": "fine film", "label": 1, "uid": "c"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["jsonl", "json", "csv", "tsv", "parquet", "saved", "list", "dataset"])
def any_source(request, tmp_path):
    import datasets

    kind = request.param
    if kind == "jsonl":
        return write_jsonl(tmp_path / "p.jsonl", ROWS)
    if kind == "json":
        (tmp_path / "p.json").write_text(json.dumps(ROWS))
        return tmp_path / "p.json"
    if kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        lines = [sep.join(ROWS[0])] + [sep.join(str(v) for v in r.values()) for r in ROWS]
        (tmp_path / f"p.{kind}").write_text("\n".join(lines) + "\n")
        return tmp_path / f"p.{kind}"
    ds = datasets.Dataset.from_list(ROWS)
    if kind == "parquet":
        ds.to_parquet(str(tmp_path / "p.parquet"))
        return tmp_path / "p.parquet"
    if kind == "saved":
        ds.save_to_disk(str(tmp_path / "saved"))
        return tmp_path / "saved"
    return ROWS if kind == "list" else ds


def test_every_format_loads_with_roles_and_stable_ids(any_source):
    pool = load_pool(any_source, id_column="uid")
    assert len(pool) == 3
    assert pool.roles == ("text", "label")  # 'sentence' fills the text role by default
    assert pool.texts() == ["good film", "bad film", "fine film"]
    assert pool.ids.tolist() == [0, 1, 2] and pool.ids.dtype == np.int64
    assert pool.column("key") == ["a", "b", "c"]
    assert [str(v) for v in pool.column("label")] == ["1", "0", "1"]


def test_explicit_mapping_and_select(tmp_path):
    rows = [{"q": "2+2?", "a": "4", "text": "unused"}, {"q": "3+3?", "a": "6", "text": "unused"}]
    pool = load_pool(write_jsonl(tmp_path / "qa.jsonl", rows), columns={"prompt": "q", "response": "a"})
    assert set(pool.roles) >= {"prompt", "response"}
    assert pool.select([1])["prompt"] == ["3+3?"]
    assert pool.select([1, 0])["response"] == ["6", "4"]
    with pytest.raises(ConfigError, match="not in the pool"):
        pool.select([5])


def test_role_column_clash_is_kept_under_another_name(tmp_path):
    rows = [{"text": "old", "body": "new"}]
    pool = load_pool(write_jsonl(tmp_path / "c.jsonl", rows), columns={"text": "body"})
    assert pool.texts() == ["new"]
    assert pool.column("text_original") == ["old"]


def test_prompt_response_texts_join(tmp_path):
    pool = load_pool([{"prompt": "Say hi", "response": "hi"}])
    assert pool.texts() == ["Say hi\nhi"]


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "broken"\n')
    before = digest(path)
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON at column"):
        load_pool(path)
    assert digest(path) == before  # input untouched


def test_wrong_encoding_names_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_pool(path)


def test_missing_column_lists_available_and_suggests(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(DataError) as err:
        load_pool(path, columns={"text": "sentense"})
    msg = str(err.value)
    assert "'sentense'" in msg and "Available columns: sentence, label, uid" in msg and "Did you mean 'sentence'" in msg


def test_unknown_role_is_an_error():
    with pytest.raises(ConfigError, match="Did you mean 'label'"):
        load_pool(ROWS, columns={"lable": "label"})


def test_required_role_missing(tmp_path):
    with pytest.raises(DataError, match="required role 'label'"):
        load_pool([{"text": "x"}], require=("label",))


def test_empty_pool(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_pool(tmp_path / "e.jsonl")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_pool(tmp_path / "e.csv")


def test_duplicate_ids_name_both_lines(tmp_path):
    rows = [{"text": "a", "uid": 1}, {"text": "b", "uid": 2}, {"text": "c", "uid": 1}]
    with pytest.raises(DataError, match=r"d\.jsonl:3: duplicate id 1 in column 'uid' \(first at .*d\.jsonl:1\)"):
        load_pool(write_jsonl(tmp_path / "d.jsonl", rows), id_column="uid")


def test_wrong_types_are_named(tmp_path):
    with pytest.raises(DataError, match=r"t\.jsonl:2: field 'text' is int"):
        load_pool(write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"text": 5}]))
    with pytest.raises(DataError, match=r"n\.jsonl:2: field 'text' \(text\) must be a string, got None"):
        load_pool(write_jsonl(tmp_path / "n.jsonl", [{"text": "a"}, {"text": None}]))
    with pytest.raises(DataError, match=r"b\.jsonl:1: field 'text' \(text\) is empty"):
        load_pool(write_jsonl(tmp_path / "b.jsonl", [{"text": "  "}]))


def test_rows_with_different_fields(tmp_path):
    with pytest.raises(DataError, match=r"f\.jsonl:2: fields differ .*missing \['label'\], unexpected \['lbl'\]"):
        load_pool(write_jsonl(tmp_path / "f.jsonl", [{"text": "a", "label": 1}, {"text": "b", "lbl": 1}]))


def test_csv_field_count_and_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('text,label\n"a, quoted",1\nb,0,extra\n')
    with pytest.raises(DataError, match=r"x\.csv:3: expected 2 fields \(text, label\), got 3"):
        load_pool(path)
    (tmp_path / "h.csv").write_text("text,text\na,b\n")
    with pytest.raises(DataError, match="header must name every column once"):
        load_pool(tmp_path / "h.csv")


def test_csv_bom_and_quoted_delimiters(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes('\ufefftext,label\n"a, b",1\n'.encode())
    pool = load_pool(path)
    assert pool.texts() == ["a, b"]


def test_unknown_suffix_and_format(tmp_path):
    (tmp_path / "p.txt").write_text("hello\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_pool(tmp_path / "p.txt")
    with pytest.raises(ConfigError, match="Did you mean 'jsonl'"):
        load_pool(tmp_path / "p.txt", format="jsnl")
    assert load_pool(write_jsonl(tmp_path / "p.data", [{"text": "x"}]), format="jsonl").texts() == ["x"]


def test_json_object_with_one_list(tmp_path):
    (tmp_path / "o.json").write_text(json.dumps({"meta": 1, "data": [{"text": "x"}]}))
    assert load_pool(tmp_path / "o.json").texts() == ["x"]
    (tmp_path / "bad.json").write_text('{"a": [1], "b": [2]}')
    with pytest.raises(DataError, match="exactly one list"):
        load_pool(tmp_path / "bad.json")


def test_missing_path_is_tried_as_hub_name_and_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="neither an existing file or folder nor a loadable hub dataset"):
        load_pool("no/such-dataset-here")


def test_no_role_column(tmp_path):
    with pytest.raises(DataError, match="no column matches any role"):
        load_pool([{"body": "x"}])


@pytest.mark.data
def test_real_trec_tsv_like_file(shared_data, tmp_path):
    """The shared TREC file is 'LABEL:fine question' per line; read it through a list of dicts."""
    lines = (shared_data / "trec" / "train.txt").read_bytes().decode("latin-1").splitlines()
    rows = [{"label": ln.split(":", 1)[0], "text": ln.split(" ", 1)[1]} for ln in lines if ln.strip()]
    pool = load_pool(rows, require=("text", "label"))
    assert len(pool) == 5452
    assert set(pool.column("label")) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
