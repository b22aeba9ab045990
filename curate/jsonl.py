"""JSON Lines in and out: the one reader and the one writer every JSONL file in curate goes through.

Lines are split on ``"\\n"`` only (a trailing ``"\\r"`` is dropped). ``str.splitlines()`` would also
split at U+0085, U+2028, U+2029 and other Unicode line breaks, which are valid unescaped inside JSON
strings: a file written with ``ensure_ascii=False`` from real text carries them, and splitting
there turns one row into two broken ones. Bad rows are a :class:`~curate.errors.DataError` naming
the file and line; input files are only ever read. :func:`write_jsonl` and :func:`write_text_atomic`
write a temporary file in the same folder and ``os.replace`` it, so a file appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from curate.errors import DataError

__all__ = ["check_regular_file", "decode_utf8", "iter_jsonl", "read_jsonl", "split_lines", "write_jsonl",
           "write_text_atomic"]


def check_regular_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a Path when it is a regular file; a DataError (never a hang) for a missing path,
    a folder, a named pipe, a socket or a device."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what}.") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}).") from None
    if stat.S_ISREG(mode):
        return path
    kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")
    raise DataError(f"{path}: is {kind}, not a regular {what}. Copy the data into a regular file first "
                    "(e.g. cat PIPE > data.jsonl).")


def decode_utf8(raw: bytes, path: str | Path) -> str:
    """``raw`` decoded as strict UTF-8 (a leading BOM dropped); an odd byte is a DataError naming its line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}). "
            "Re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
        ) from None
    return text.removeprefix("\ufeff")  # a BOM from spreadsheet exports is not part of the data


def split_lines(text: str) -> list[str]:
    """Lines split on ``"\\n"`` only, each without a trailing ``"\\r"``; no empty last line for a final newline."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def iter_jsonl(path: str | Path, *, text: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL file (numbers start at 1).

    ``text`` gives the file's content when it was already read. A line that is not JSON, or not a
    JSON object, is a DataError naming the file, line and column.
    """
    if text is None:
        text = decode_utf8(check_regular_file(path).read_bytes(), path)
    for lineno, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON at column {err.colno}: {err.msg}.") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}.")
        yield lineno, row


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Every row of a JSONL file as ``(line number, object)``; see :func:`iter_jsonl`."""
    return list(iter_jsonl(path))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A per-process name (not mkstemp, whose 0600 mode would outlive the rename) in the same folder,
    # so that os.replace is atomic.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line (``ensure_ascii=False``), atomically; returns the path."""
    return write_text_atomic(path, "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows))
