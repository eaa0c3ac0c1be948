"""Loading a source as a Job on the executor seam (runner/data/job.py): parse, map and validate rows in
batches anywhere, write them here in input order.

Batches ("parts"), in reading order:
  ("range", path, rel, start, end, size)   bytes [start, end) of a local JSON Lines file, whole lines: most
                                           data; line and row numbers come back counted from the range's start
  ("rowgroup", path, rel, i, first, size)  row group i of a local parquet file, whose rows are numbered after
                                           the `first` rows of the groups before it (its footer, read here, says)
  ("file", path, base_dir, size)           a whole local .json / .csv file (parsed as one document)
A part that reads a file carries the size the driver saw: where the part runs (a forked worker, a Ray node)
the file must be there, readable and that size, else one line (a node that does not mount the recipe's
files, or a stale copy of them, would otherwise quarantine or read other rows).
  ("shard", path, (kind, shard), size)      rows another source kind lets a task read where it runs
                                           (sources.shards: a hub split's arrow files, SHARD_ROWS at a time)
  ("raws", [Raw, ...])               rows this process read: other source kinds (a remote URL, a hub split
                                     streamed, shuffled or held in memory), saved datasets, a parquet file
                                     whose footer cannot be read, a source with `limit`, a path the walk
                                     left out

The batch function (LoadBatch) maps each row to its record line (or a quarantine entry), fills `{{name}}`
placeholders, and returns them with the ids and counts; the reducer (Reducer) adds the lines and rows of
the earlier ranges of the same file to the quarantine entries' line and row numbers, writes the record
lines and entries in input order, and sums the counts (after a row group that could not be read it drops
the file's later groups: one read of the whole file stops there). Whatever the executor and the batch
size, the records, the quarantine file and the stats are the bytes one pass over the rows writes (but for
a parquet file damaged past its footer: which rows before the damage load, and the words, may differ)."""
from __future__ import annotations

import dataclasses
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from .. import sources
from ..errors import RecipeError, Where
from ..recipe import model
from ..sources.readers import Raw, entries, jsonl_range, parquet, read_entry, rel_path
from .common import without_gc
from .io import dumps
from .job import Job
from .mapped import MapError
from .stats import Stats

RANGE_BYTES = 1 << 20   # a JSON Lines batch: ~1 MiB of whole lines (2-4k rows of chat data)
RAW_ROWS = 2048         # a batch of rows read here
BIG_BYTES = 4 << 20     # less than this loads in this process: starting workers costs more than it saves


class RowRules(NamedTuple):
    """How a raw row becomes a record or a quarantine entry: runner/data/formats.py's business, handed in
    (module functions, so they pickle by name) rather than imported, as formats runs loads through here."""
    mapper_for: Callable[..., Any]          # (name, format, fields, roles) -> Mapper
    to_record: Callable[..., dict]          # (name, row, mapper) -> record, or raises MapError
    quarantine_entry: Callable[..., dict]   # (name, raw, code, detail) -> entry
    place: Callable[[dict], str]            # an entry's "file:line", for an error


@dataclasses.dataclass
class Loaded:
    """One batch's outcome: its record lines (in order), their ids, its quarantine entries, counts."""
    text: str
    ids: list[str]
    quarantine: list[dict[str, Any]]
    seen: int
    rel: str | None = None     # a range: its file, and whether an earlier range of it came before
    cont: bool = False
    lines: int = 0             # a range: its lines (blank ones too) and rows, for the next range's numbers
    found: dict[str, Any] = dataclasses.field(default_factory=dict)   # placeholders (data.placeholders)
    group: tuple[str, int] | None = None   # a parquet row group: (its file, its index)
    broken: bool = False                   # reading that group failed: the file's later groups are dropped


class LoadBatch:
    """The row-parallel half: one part -> Loaded. Picklable (plain data; the mapper is rebuilt where it
    runs); the mapper is built here once, so a bad `fields:` template is an error before any work."""

    def __init__(self, name: str, source: model.Source, fill: bool, rules: RowRules):
        self.name, self.fmt, self.roles, self.rules = name, source.format, dict(source.roles), rules
        self.fields = source.fields and dataclasses.replace(source.fields, meta=dict(source.fields.meta))
        self.values = dict(source.placeholders) if fill else None
        self._mapper = self._make()

    def _make(self):
        return self.rules.mapper_for(self.name, self.fmt, self.fields, self.roles)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mapper": None}

    @without_gc
    def __call__(self, part: tuple) -> Loaded:
        from .placeholders import Filler
        to_record, quarantine_entry = self.rules.to_record, self.rules.quarantine_entry
        if self._mapper is None:
            self._mapper = self._make()
        fill = Filler(self.values) if self.values is not None else None
        raws = _raws(part)
        out, ids, quarantine, seen, raw = [], [], [], 0, None
        for raw in raws:
            seen += 1
            if raw.error is None:
                try:
                    rec = to_record(self.name, raw.data, self._mapper)
                except MapError as e:
                    quarantine.append(quarantine_entry(self.name, raw, e.code, e.detail))
                    continue
                ids.append(rec["id"])
                out.append(dumps(fill(rec) if fill else rec))
                continue
            quarantine.append(quarantine_entry(self.name, raw, *raw.error))
        done = Loaded("".join(x + "\n" for x in out), ids, quarantine, seen, found=fill.found() if fill else {})
        if isinstance(raws, _Range):
            done.rel, done.cont, done.lines = part[2], part[3] > 0, raws.lines
        elif part[0] == "rowgroup":
            done.group, done.broken = (part[2], part[3]), raw is not None and raw.row is None
        return done


def _raws(part: tuple) -> Iterable[Raw]:
    if part[0] != "raws":
        _same_file(part[1], part[-1])
    if part[0] == "range":
        return _Range(part)
    if part[0] == "rowgroup":
        _, path, rel, group, first, _ = part
        return parquet(path, rel, group, first)
    if part[0] == "file":
        return read_entry((part[1], None), part[2])
    if part[0] == "shard":
        return sources.shard_rows(part[2])
    return part[1]


def _same_file(path: Path, size: int) -> None:
    """The file a part reads is the one the driver found: there, readable, `size` bytes."""
    try:
        now = os.stat(path).st_size
        problem = None if os.access(path, os.R_OK) else "cannot be read"
    except FileNotFoundError:
        now, problem = None, "is not there"
    except OSError as e:
        now, problem = None, f"cannot be read ({e.strerror})"
    if problem is None and now != size:
        problem = f"has {now:,} bytes, not the {size:,} the run found"
    if problem:
        raise RecipeError(f"{path} {problem} where its rows are read (host {socket.gethostname()}): it changed during "
                          "the run, or (--executor ray) this node does not see the recipe's files at the same path "
                          "as the driver (a hub split's: HF_DATASETS_CACHE)")


class _Range:
    """The rows of a range, and how many lines it holds (blank ones too)."""

    def __init__(self, part: tuple):
        _, path, rel, start, end, _ = part
        self.rows, self.lines = jsonl_range(path, rel, start, end)

    def __iter__(self) -> Iterator[Raw]:
        return self.rows


# --- the driver's half: what to read, and the reducer ---------------------------------------------------

def parts(name: str, source: model.Source, specs: list[str], base_dir: Path, seed: int) -> tuple[Iterable[tuple], int]:
    """(the parts, in reading order; the bytes the local files hold, for the `big` hint)."""
    if sources.kind_of(source) is not sources.local or source.limit is not None:
        shards = None if source.limit is not None else sources.shards(name, source, base_dir, seed)
        if shards is not None:
            total = sum(dict((path, size) for path, size, _ in shards).values())
            return [("shard", path, shard, size) for path, size, shard in shards], total
        few = source.limit is not None and source.limit <= 8 * RAW_ROWS
        return _chunks(sources.rows(name, source, base_dir, seed)), 0 if few else BIG_BYTES
    found = [e for spec in specs for e in entries(spec, base_dir)]
    size = sum(p.stat().st_size for p, skipped in found if skipped is None and p.is_file())
    return _local_parts(found, base_dir), size


def _local_parts(found: list, base_dir: Path) -> Iterator[tuple]:
    for path, skipped in found:
        readable = skipped is None and path.is_file() and os.access(path, os.R_OK)
        groups = _row_groups(path) if readable and path.name.endswith(".parquet") else None
        if groups is not None:
            rel, size = rel_path(path, base_dir), path.stat().st_size
            yield from (("rowgroup", path, rel, i, first, size) for i, first in enumerate(groups))
        elif not readable or path.name.endswith(".parquet"):
            # skipped by the walk, unreadable, or a parquet footer that cannot be read: read here, whose
            # reader says why in the quarantine
            yield from _chunks(read_entry((path, skipped), base_dir))
        elif path.name.endswith(".jsonl"):
            yield from _ranges(path, rel_path(path, base_dir))
        else:
            yield ("file", path, base_dir, path.stat().st_size)


def _row_groups(path: Path) -> list[int] | None:
    """The rows before each row group of a parquet file, from its footer; None when the footer cannot be
    read (the whole file is then read here, which says why in the reader's words)."""
    import pyarrow.parquet as pq
    try:
        meta = pq.read_metadata(path)
    except Exception:   # pyarrow raises several types for a damaged or unreadable file
        return None
    firsts, n = [], 0
    for i in range(meta.num_row_groups):
        firsts.append(n)
        n += meta.row_group(i).num_rows
    return firsts


def _ranges(path: Path, rel: str) -> Iterator[tuple]:
    """Ranges of whole lines of about RANGE_BYTES, found by reading one block past each cut."""
    size, start = path.stat().st_size, 0
    with open(path, "rb") as f:
        while start < size:
            f.seek(min(start + RANGE_BYTES, size))
            tail = f.readline()
            end = min(f.tell() if tail else size, size)
            yield ("range", path, rel, start, end, size)
            start = end


def _chunks(raws: Iterator[Raw]) -> Iterator[tuple]:
    batch: list[Raw] = []
    for raw in raws:
        batch.append(raw)
        if len(batch) == RAW_ROWS:
            yield ("raws", batch)
            batch = []
    if batch:
        yield ("raws", batch)


class Reducer:
    """The global half: record lines to write(), quarantine entries to put_aside(), in input order; the
    stats the load step reports. With on_error: fail, the first bad row in input order is the error."""

    def __init__(self, name: str, specs: list[str], on_error: str, place: Callable[[dict], str],
                 write: Callable[[str], Any], put_aside: Callable[[dict], Any]):
        self.name, self.specs, self.on_error, self.place = name, specs, on_error, place
        self.write, self.put_aside = write, put_aside

    def __call__(self, results: Iterator[Loaded]) -> dict[str, Any]:
        name, stats, ids, codes, first = self.name, Stats([self.name]), Counter(), Counter(), {}
        found: dict[str, Any] = {"filled": 0, "unresolved": Counter(), "example": {}}
        rel, lines, rows, dead = None, 0, 0, None
        for r in results:
            if r.group is not None:
                if r.group[1] > 0 and r.group[0] == dead:
                    continue    # a whole-file read stopped at the group that failed: so do the later ones
                dead = r.group[0] if r.broken else None
            if r.rel is not None and not (r.cont and r.rel == rel):
                rel, lines, rows = r.rel, 0, 0
            for q in r.quarantine:
                if r.rel is not None:
                    q["line"] += lines
                    q["row"] += rows
                self._fail(q)
                codes[q["code"]] += 1
                first.setdefault(q["code"], q)
                stats.dropped(name, f"quarantine:{q['code']}")
                self.put_aside(q)
            if r.rel is not None:
                lines, rows = lines + r.lines, rows + r.seen
            self.write(r.text)
            ids.update(r.ids)
            stats.seen(name, r.seen)
            stats.kept(name, len(r.ids))
            _merge(found, r.found)
        stats.assert_balanced()
        return self._stats(stats, ids, codes, first, found)

    def _fail(self, q: dict) -> None:
        if self.on_error == "fail":
            # the place once: as the error's file:line when there is a line, else in the text
            where = "" if q["line"] else f"{self.place(q)}: "
            raise RecipeError(f"source '{self.name}': {where}{q['reason']} (on_error: fail stops at the "
                              "first bad row; on_error: skip quarantines bad rows and goes on)",
                              Where(q["file"], q["line"]) if q["line"] else None)

    def _stats(self, stats: Stats, ids: Counter, codes: Counter, first: dict, found: dict) -> dict[str, Any]:
        quarantined = sum(codes.values())
        if not stats.to_json()["rows_out"]:
            if not quarantined:
                raise RecipeError(f"source '{self.name}': no rows in {', '.join(self.specs)}")
            common, k = codes.most_common(1)[0]
            q = first[common]
            raise RecipeError(f"source '{self.name}': none of its {quarantined} rows could be used; {k} failed with "
                              f"{common}, e.g. {self.place(q)}: {q['reason']} (is the format right?)")
        dups = {i: k for i, k in ids.items() if k > 1}
        out = stats.to_json()
        out["quarantined"] = quarantined
        # rows that share an id are kept (the split keeps them on one side), but counted: often a data bug
        out["duplicate_ids"] = {"rows": sum(dups.values()) - len(dups), "ids": len(dups),
                                "examples": sorted(dups, key=lambda i: (-dups[i], i))[:5]}
        if found["filled"] or found["unresolved"]:
            out["placeholders"] = {"filled": found["filled"], "unresolved": dict(sorted(found["unresolved"].items())),
                                   "example": found["example"]}
        return out


def _merge(found: dict, part: dict) -> None:
    if part:
        found["filled"] += part["filled"]
        found["unresolved"].update(part["unresolved"])
        for k, rid in part["example"].items():
            found["example"].setdefault(k, rid)   # the first row in input order that has it


def load_job(name: str, source: model.Source, specs: list[str], base_dir: Path, seed: int, rules: RowRules, *,
             write: Callable[[str], Any], put_aside: Callable[[dict], Any], fill: bool) -> Job:
    batches, size = parts(name, source, specs, Path(base_dir), seed)
    reduce = Reducer(name, specs, source.on_error, rules.place, write, put_aside)
    return Job(LoadBatch(name, source, fill, rules), batches, reduce,
               big=size >= BIG_BYTES, name=f"load.{name}")
