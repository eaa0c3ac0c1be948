"""Readers: a local source path (a file, a folder, a glob, a saved `datasets` dataset) -> raw rows, each
with the file and line it came from; remote files (runner.sources.remote) use the same parsers. A row
that cannot be read is yielded as a `Raw` with an error, never raised, so the loader quarantines it and
goes on; a file that cannot be read at all is one such entry. Blank lines in .jsonl/.csv hold no data
and are skipped, and so are hidden files and folders (".cache/", ".ipynb_checkpoints/") inside a
source folder.

Invalid UTF-8 is found per row: files are decoded with `surrogateescape`, which turns each bad byte
into a lone surrogate, and a row whose text holds one is quarantined while its neighbours load.

A row nested deeper than MAX_DEPTH, or holding an integer past Python's digit limit, is an `invalid_json`
entry too: json would raise RecursionError or a bare ValueError for it, and every later consumer of a
row (null checks, templates, the quarantine writer) may recurse, so the bound is set here, once."""
from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from ..paths import READABLE, data_files

_BAD_BYTE = re.compile("[\udc80-\udcff]")   # what surrogateescape makes of a byte that is not UTF-8
_WS = re.compile(r"[ \t\n\r]*")
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')   # a JSON string (skipped whole) or a bracket
_NUMBER = re.compile(r"-?[0-9]*(?:\.[0-9]*)?(?:[eE][-+]?[0-9]*)?")
MAX_DEPTH = 500   # deepest row read; json's own limit (~1000, less when called deep) is not deterministic


class Raw(NamedTuple):   # a NamedTuple: built once per row, and 5x cheaper than a frozen dataclass
    file: str                        # relative to the recipe folder, "/"-separated
    line: int | None                 # 1-based line where the row starts (text formats), else None
    row: int | None                  # 1-based row number in the file; None when a whole file failed
    data: dict[str, Any] | None      # the parsed row, or None with `error`
    error: tuple[str, str] | None = None    # (code, detail)
    text: str | None = None          # the undecodable text, for the quarantine entry


def resolve(spec: str, base_dir: Path) -> list[Path]:
    """The data files (or the one saved-dataset folder) that `spec` names, in sorted order."""
    return data_files(spec, base_dir)[0]


def iter_rows(spec: str, base_dir: Path, limit: int | None = None) -> Iterator[Raw]:
    """Every row of every file `spec` names, then stop after `limit` rows (bad rows count too:
    limit means "read at most this many rows")."""
    return capped((read_entry(e, base_dir) for e in entries(spec, base_dir)), limit)


def entries(spec: str, base_dir: Path) -> list[tuple[Path, Raw | None]]:
    """What `spec` names, in reading order: (a data file, None), or (a path the walk left out, the one
    quarantine entry saying why: a dangling link, a file or folder reached twice through symlinks),
    so nothing is left out silently."""
    found, skipped = data_files(spec, base_dir)
    out = [(s.path, Raw(rel_path(s.path, base_dir), None, None, None, (s.code, s.detail))) for s in skipped]
    out += [(path, None) for path in found]
    return sorted(out, key=lambda e: e[0].as_posix())


def read_entry(entry: tuple[Path, Raw | None], base_dir: Path) -> Iterator[Raw]:
    path, skipped = entry
    return iter([skipped]) if skipped is not None else _read(path, rel_path(path, base_dir))


def capped(files: Iterator[Iterator[Raw]], limit: int | None) -> Iterator[Raw]:
    """The rows of each file in turn, at most `limit` of them in all (None: every row)."""
    n = 0
    for rows in files:
        for raw in rows:
            if limit is not None and n >= limit:
                return
            n += 1
            yield raw


def rel_path(path: Path, base_dir: Path) -> str:
    return Path(os.path.relpath(path, base_dir)).as_posix()


def _read(path: Path, rel: str) -> Iterator[Raw]:
    if path.is_dir():
        return _dataset(path, rel)
    try:
        if path.name.endswith(".parquet"):
            return parquet(path, rel)
        if path.name.endswith(".jsonl"):
            return _jsonl(_file_lines(open(path, "rb")), rel)   # streamed: a file of any size
        data = path.read_bytes()
    except OSError as e:
        return iter([Raw(rel, None, None, None, ("unreadable_file", str(e)))])
    return parse(path.name, data, rel)


def parse(name: str, data: bytes, rel: str) -> Iterator[Raw]:
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    if name.endswith(".jsonl"):
        return _jsonl(iter(text.split("\n")), rel)
    if name.endswith(".json"):
        return _json(text, rel)
    if name.endswith(".csv"):
        return _csv(text, rel)
    suffix = Path(name).suffix or "a file without extension"
    return iter([Raw(rel, None, None, None, ("unreadable_file", f"cannot read {suffix}; use {', '.join(READABLE)}"))])


def _object(obj: Any, rel: str, line: int | None, row: int) -> Raw:
    if isinstance(obj, dict):
        return Raw(rel, line, row, obj)
    return Raw(rel, line, row, None, ("not_an_object", f"a row must be a JSON object, got {type(obj).__name__}"),
               json.dumps(obj, ensure_ascii=False, default=str))


def _file_lines(f) -> Iterator[str]:
    """The lines of a binary file as the whole file decoded and split at "\n" gives them (a BOM at its
    start dropped, a byte that is not UTF-8 as a lone surrogate), one at a time."""
    with f:
        first = True
        for line in f:
            try:
                s = line.decode("utf-8")
            except UnicodeDecodeError:
                s = line.decode("utf-8", "surrogateescape")
            if first:
                s, first = s.removeprefix("\ufeff"), False
            yield s[:-1] if s.endswith("\n") else s


def jsonl_range(path: Path, rel: str, start: int, end: int) -> tuple[Iterator[Raw], int]:
    """The rows of bytes [start, end) of a JSON Lines file, a range that starts a line and ends one, as
    _read gives them but with line and row numbers counted from the range's start (the caller adds the
    lines and rows before it); and how many lines the range holds."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    text = data.decode("utf-8", "surrogateescape")   # per line as _file_lines: "\n" never ends a bad sequence
    if start == 0:
        text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()   # the newline that ends the range, not an empty line after it
    return _jsonl(iter(lines), rel), len(lines)


def _jsonl(lines: Iterator[str], rel: str) -> Iterator[Raw]:
    row = 0
    for lineno, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        row += 1
        bad = _BAD_BYTE.search(line) if not line.isascii() else None
        if bad:
            yield Raw(rel, lineno, row, None, ("invalid_utf8", f"byte {bad.start() + 1} of the line is not UTF-8"),
                      _printable(line))
            continue
        try:
            obj = loads(line)
        except ValueError as e:
            yield Raw(rel, lineno, row, None, ("invalid_json", value_problem(e, line=False)), line)
            continue
        yield _object(obj, rel, lineno, row)


def loads(text: str) -> Any:
    """json.loads within the readers' bounds: a value nested deeper than MAX_DEPTH, or an integer past
    Python's digit limit, raises ValueError like a syntax error does (value_problem says which)."""
    if _brackets(text, 0, len(text)) > MAX_DEPTH:
        _check_depth(text, _WS.match(text).end())
    return json.loads(text)


def _brackets(text: str, start: int, end: int) -> int:
    """How many brackets text[start:end] holds: a value cannot nest deeper than that (a cheap first check)."""
    return text.count("[", start, end) + text.count("{", start, end)


def _check_depth(text: str, start: int) -> None:
    """Raise _Deep when the value at text[start] nests more than MAX_DEPTH levels."""
    depth = 0
    for m in _TOKENS.finditer(text, start):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _Deep(m.start() - start, _closing(text, m.end(), depth))
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return


def _closing(text: str, i: int, depth: int) -> int:
    """The index after the bracket that brings `depth` back to 0 (the end of the text if none does)."""
    for m in _TOKENS.finditer(text, i):
        c = m.group()
        depth += 1 if c in "[{" else -1 if c in "]}" else 0
        if depth == 0:
            return m.end()
    return len(text)


class _Deep(ValueError):
    """A value nested deeper than MAX_DEPTH; `end`: the index after it."""

    def __init__(self, pos: int, end: int):
        super().__init__(f"nested deeper than {MAX_DEPTH} levels (from column {pos + 1} of the row)")
        self.end = end


class _Unreadable(ValueError):
    """A value json refused without a place (an integer past the digit limit), or too deep: one row."""

    def __init__(self, detail: str, end: int):
        super().__init__(detail)
        self.end = end


def value_problem(e: ValueError, line: bool = True) -> str:
    """json's syntax errors say where; a deep row or a huge integer says what."""
    if isinstance(e, json.JSONDecodeError):
        return json_problem(e, line)
    if isinstance(e, _Deep) or isinstance(e, _Unreadable):
        return str(e)
    return f"a number too long to read: {str(e).split(';')[0]}"   # "Exceeds the limit (4300 digits)..."


def json_problem(e: json.JSONDecodeError, line: bool = True) -> str:
    """'Expecting value at line 3 column 17'. Some of json's messages end in "at" already
    ("Unterminated string starting at"), so the position follows without a second one."""
    where = f"line {e.lineno} column {e.colno}" if line else f"column {e.colno}"
    return f"{e.msg} {where}" if e.msg.endswith(" at") else f"{e.msg} at {where}"


def _json(text: str, rel: str) -> Iterator[Raw]:
    """A JSON array of rows, or an object holding exactly one list of rows. Parsed element by element
    so each row knows its line, and rows before a syntax error still load (the rest of the file
    becomes one quarantine entry that says so)."""
    dec = json.JSONDecoder()
    lines = _LineCounter(text)
    i = _WS.match(text, 0).end()
    items: list[tuple[int, int, Any]] = []
    try:
        if text.startswith("[", i):
            items, end = _scan_array(text, i, dec)
        elif text.startswith("{", i):
            items, end = _scan_object(text, i, dec)
        else:
            yield Raw(rel, 1, None, None, ("not_rows", "a .json file must hold an array of rows, or an object with one list of rows"))
            return
        if _WS.match(text, end).end() != len(text):
            raise json.JSONDecodeError("Extra data after the rows", text, _WS.match(text, end).end())
    except _Partial as p:
        yield from _json_items(p.items, text, rel, lines)
        e = p.error
        yield Raw(rel, e.lineno, None, None, ("invalid_json", f"{json_problem(e)}; "
                  f"the rest of the file (after {len(p.items)} rows) could not be read"), _printable(text[e.pos:e.pos + 200]))
        return
    except json.JSONDecodeError as e:
        yield from _json_items(items, text, rel, lines)
        yield Raw(rel, e.lineno, None, None, ("invalid_json", json_problem(e)),
                  _printable(text[e.pos:e.pos + 200]))
        return
    except _NotRows as e:
        yield Raw(rel, 1, None, None, ("not_rows", str(e)))
        return
    except (ValueError, RecursionError) as e:   # a value beside the rows' list: too deep, or a huge number
        why = "nested too deep to read" if isinstance(e, RecursionError) else value_problem(e)
        yield Raw(rel, 1, None, None, ("invalid_json", f"{why}; the file could not be read"))
        return
    yield from _json_items(items, text, rel, lines)


def _json_items(items: list[tuple[int, int, Any]], text: str, rel: str, lines: "_LineCounter") -> Iterator[Raw]:
    for row, (start, end, obj) in enumerate(items, 1):
        line = lines.at(start)
        bad = _BAD_BYTE.search(text, start, end)
        if isinstance(obj, _Unreadable):
            yield Raw(rel, line, row, None, ("invalid_json", str(obj)), _printable(text[start:min(end, start + 200)]))
        elif bad:
            yield Raw(rel, line, row, None, ("invalid_utf8", f"byte {bad.start() - start + 1} of the row is not UTF-8"),
                      _printable(text[start:end]))
        else:
            yield _object(obj, rel, line, row)


class _Partial(Exception):
    """A syntax error after some rows were parsed: keep those rows."""

    def __init__(self, items: list, error: json.JSONDecodeError):
        self.items, self.error = items, error


class _NotRows(Exception):
    pass


def _scan_array(text: str, i: int, dec: json.JSONDecoder) -> tuple[list[tuple[int, int, Any]], int]:
    """text[i] == "[": its elements as (start, end, value), and the index after "]"."""
    items: list[tuple[int, int, Any]] = []
    i = _WS.match(text, i + 1).end()
    if text.startswith("]", i):
        return items, i + 1
    try:
        while True:
            try:
                obj, end = _decode(text, i, dec)
            except _Unreadable as bad:
                obj, end = bad, bad.end
            items.append((i, end, obj))
            i = _WS.match(text, end).end()
            if text.startswith(",", i):
                i = _WS.match(text, i + 1).end()
            elif text.startswith("]", i):
                return items, i + 1
            else:
                raise json.JSONDecodeError("Expecting ',' or ']'", text, i)
    except json.JSONDecodeError as e:
        raise _Partial(items, e) from None


def _decode(text: str, i: int, dec: json.JSONDecoder) -> tuple[Any, int]:
    """One element of a .json array, as raw_decode gives it; a value too deep or a number too long is
    raised as _Unreadable with the index after it, so the rows after it still load."""
    try:
        obj, end = dec.raw_decode(text, i)
    except RecursionError:    # far past MAX_DEPTH: _check_depth below says so
        obj, end = None, None
    except json.JSONDecodeError:
        raise
    except ValueError as e:   # an integer past the digit limit
        raise _Unreadable(value_problem(e), _value_end(text, i)) from None
    if end is None or _brackets(text, i, end) > MAX_DEPTH:
        try:
            _check_depth(text, i)
        except _Deep as e:
            raise _Unreadable(str(e), e.end) from None
        if end is None:
            raise _Unreadable("nested too deep to read", _value_end(text, i))
    return obj, end


def _value_end(text: str, i: int) -> int:
    """The index after the container or number at text[i], found without parsing it."""
    return _closing(text, i, 0) if text[i] in "[{" else _NUMBER.match(text, i).end()


def _scan_object(text: str, i: int, dec: json.JSONDecoder) -> tuple[list[tuple[int, int, Any]], int]:
    """text[i] == "{": the elements of its one list-valued key."""
    lists: dict[str, list] = {}
    i = _WS.match(text, i + 1).end()
    while not text.startswith("}", i):
        key, i = dec.raw_decode(text, i)
        i = _WS.match(text, i).end()
        if not isinstance(key, str) or not text.startswith(":", i):
            raise json.JSONDecodeError("Expecting a key and ':'", text, i)
        i = _WS.match(text, i + 1).end()
        if text.startswith("[", i):
            lists[key], i = _scan_array(text, i, dec)
        else:
            _, i = dec.raw_decode(text, i)
        i = _WS.match(text, i).end()
        if text.startswith(",", i):
            i = _WS.match(text, i + 1).end()
        elif not text.startswith("}", i):
            raise json.JSONDecodeError("Expecting ',' or '}'", text, i)
    if len(lists) != 1:
        raise _NotRows(f"a .json object must hold exactly one list of rows; it has {len(lists)} "
                       f"({', '.join(sorted(lists)) or 'none'})")
    return next(iter(lists.values())), i + 1


class _LineCounter:
    """Line numbers of increasing offsets in one pass."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        self.line += self.text.count("\n", self.pos, offset)
        self.pos = offset
        return self.line


def _csv(text: str, rel: str) -> Iterator[Raw]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    row, start = 0, 1
    try:
        for rec in reader:
            line, start = start, reader.line_num + 1
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if header is None:
                header = rec
                if len(set(header)) != len(header):   # a dict would keep one of the columns, silently
                    dup = sorted({h for h in header if header.count(h) > 1})
                    yield Raw(rel, line, None, None, ("bad_csv_header", f"duplicate column names: {', '.join(dup)}"))
                    return
                continue
            row += 1
            joined = ",".join(rec)
            bad = _BAD_BYTE.search(joined)
            if bad:
                yield Raw(rel, line, row, None, ("invalid_utf8", "the row holds bytes that are not UTF-8"), _printable(joined))
            elif len(rec) != len(header):
                yield Raw(rel, line, row, None, ("bad_csv_row", f"{len(rec)} fields, the header has {len(header)}"), joined)
            else:
                yield Raw(rel, line, row, dict(zip(header, rec)))
    except csv.Error as e:
        yield Raw(rel, start, None, None, ("invalid_csv", f"{e}; the rest of the file could not be read"))


def parquet(path, rel: str, group: int | None = None, first: int = 0) -> Iterator[Raw]:
    """`path`: a local file, or an opener of a remote one (parquet reads by seeking). `group`: that row group
    only (a load task's part), its rows numbered after the `first` rows of the groups before it."""
    import pyarrow.parquet as pq

    row = first
    try:
        source = path() if callable(path) else path
        # one group is one task's work on one CPU (a forked worker or a Ray task): no thread pool of its own
        groups = None if group is None else [group]
        for batch in pq.ParquetFile(source).iter_batches(batch_size=4096, row_groups=groups, use_threads=group is None):
            for obj in batch.to_pylist():
                row += 1
                yield Raw(rel, None, row, obj)
    except Exception as e:   # pyarrow raises several types for a damaged file; all mean the same here
        yield Raw(rel, None, None, None, ("unreadable_file", f"cannot read parquet after {row} rows: {e}"))


def _dataset(path: Path, rel: str) -> Iterator[Raw]:
    """A folder written by `datasets` save_to_disk: a Dataset, or a DatasetDict (splits in name order)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:   # datasets raises FileNotFoundError, ValueError, ArrowInvalid...
        yield Raw(rel, None, None, None, ("unreadable_file", f"cannot load the saved dataset: {e}"))
        return
    parts = [(rel, ds)] if isinstance(ds, datasets.Dataset) else [(f"{rel}[{k}]", ds[k]) for k in sorted(ds)]
    for label, part in parts:
        for row, obj in enumerate(part, 1):
            yield Raw(label, None, row, obj)


def _printable(s: str) -> str:
    """Text with undecodable bytes shown as \\xNN, so the quarantine entry is valid UTF-8 JSON."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
