"""load.<src>: read one source and map its rows to records.
Artifact: records.jsonl, quarantine.jsonl (rows that could not be read or mapped, with file, line
and reason).

The source's kind (runner.sources) says which of its keys the rows depend on and what identifies its
content (the declared files); run() rebuilds the Source from exactly those, so a key it reads is a key
the fingerprint holds, by construction."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import RecipeError
from .base import Declared, Kind, StepId, plain
from .result import Result, count

VERSION = 2   # 2: `{{name}}` placeholders filled and reported; a hub source's `origin` in the stats adds a key


@dataclass(frozen=True)
class LoadResult(Result):
    quarantined: int = 0
    duplicate_ids: Mapping[str, Any] = field(default_factory=dict)   # rows sharing an id (kept)
    placeholders: Mapping[str, Any] = field(default_factory=dict)    # `{{name}}` placeholders found, filled or not
    origin: Mapping[str, Any] | None = None                          # a hub dataset: the commit read

    @classmethod
    def defaults(cls) -> dict:
        return {"quarantine": {}, "datasets": {}, "placeholders": {}}

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        if record is None or not record.artifact:
            return
        src = step.source
        report["quarantine"][src] = {"count": self.quarantined, "file": str(Path(record.artifact) / "quarantine.jsonl")}
        if self.duplicate_ids.get("rows"):   # kept, but worth knowing: often the same row twice in the data
            report["quarantine"][src]["duplicate_ids"] = dict(self.duplicate_ids)
        if self.origin:
            report["datasets"][src] = self.origin   # the commit each hub source read: what makes a run reproducible
        if self.placeholders:
            report["placeholders"][src] = self.placeholders

    @classmethod
    def finish(cls, report: dict, run_dir: Path) -> None:
        """runs/<recipe>/quarantine/ holds this run's bad rows only: a file an earlier run wrote for a source
        that is clean now (or gone) is removed, so the folder and report.json always agree."""
        from ..paths import publish_files
        files = {f"quarantine/{src}.jsonl": Path(q["file"]) for src, q in report["quarantine"].items()
                 if q["count"] and Path(q["file"]).is_file()}
        written = publish_files(run_dir, "quarantine", files)   # a user's own file there stays
        for src, q in report["quarantine"].items():
            if f"quarantine/{src}.jsonl" in written:
                q["file"] = str(written[f"quarantine/{src}.jsonl"])

    @classmethod
    def markdown_head(cls, report: dict, run_dir: Path) -> list[str]:
        lines: list[str] = []
        if report.get("datasets"):
            lines += ["", "## Hub datasets", "", "| source | dataset | config | splits | revision | commit |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {k} | {d['dataset']} | {d['config'] or 'default'} | {', '.join(d['splits'])} | "
                      f"{d['revision'] or 'main (not pinned)'} | {d['sha']} |" for k, d in report["datasets"].items()]
        unresolved = {k: v for k, v in (report.get("placeholders") or {}).items() if v.get("unresolved")}
        if unresolved:
            from ..data.placeholders import describe
            lines += ["", "## Unresolved placeholders", ""] + [f"- {describe(k, v)}" for k, v in unresolved.items()]
        if report["quarantine"]:
            lines += ["", "## Quarantine", "", "| source | rows | file |", "|---|---:|---|"]
            lines += [f"| {k} | {count(v['count'])} | {v['file']} |" for k, v in report["quarantine"].items()]
            dups = {k: v["duplicate_ids"] for k, v in report["quarantine"].items() if v.get("duplicate_ids")}
            lines += [""] * bool(dups) + [
                f"- {k}: {count(d['rows'])} rows share an id with an earlier row ({count(d['ids'])} ids, e.g. "
                f"{', '.join(map(str, d['examples'][:3]))}); kept, and kept on one side of the split"
                for k, d in dups.items()]
        return lines


KIND = Kind("load", per="source", data=True, result=LoadResult, column="loaded")


def steps(recipe) -> list[StepId]:
    return [StepId("load", source=src) for src in recipe.sources]


def declare(recipe, step: StepId) -> Declared:
    from .. import sources
    s = recipe.sources[step.source]
    source, files = sources.declare(s, plain(s))
    if not s.placeholders:   # a key added later: without values, the key stays what it was
        del source["placeholders"]
    params = {"source": source, "name": step.source}
    if sources.seeded(s):
        params["seed"] = recipe.seed   # the sample drawn
    return Declared(params, files=files)


def _source(declared: dict, files: tuple[str, ...]):
    """The Source as declared: its fingerprinted keys, the keys its files entries hold (a hub revision),
    and the schema's defaults for the keys its kind does not read."""
    from .. import sources
    from ..recipe import model
    from ..recipe.schema import at
    defaults = {k: v["default"] for k, v in at(("sources", "*"))["properties"].items() if "default" in v}
    return model._build(model.Source, {**defaults, **declared, **sources.restore(files)})


def run(ctx) -> dict:
    from .. import sources
    from ..data.formats import stream_source
    from ..data.io import dumps
    from ..data.placeholders import describe

    name, source = ctx.params["name"], _source(ctx.params["source"], ctx.step.files)
    seed = ctx.params["seed"] if "seed" in ctx.params else 0   # declared where the kind draws a sample
    # rows stream from the reader to the file in input order, in batches on the run's executor: a source
    # of any size loads in constant memory
    with ctx.store.open("records.jsonl") as rec, ctx.store.open("quarantine.jsonl") as quar:
        stats = stream_source(name, source, ctx.base_dir, seed, write=rec.write,
                              put_aside=lambda q: quar.write(dumps(q) + "\n"), executor=ctx.executor)
    # a file written since the fingerprint hashed it: these rows are not what the key names (D13)
    changed = sources.unchanged(ctx.step.files, ctx.base_dir)
    if changed:
        raise RecipeError(changed)
    found = stats.get("placeholders")
    origin = sources.origin(source)
    if origin is not None:
        stats["origin"] = origin   # the commit read: in the manifest and the report
    records, quarantined = stats["rows_out"], stats["quarantined"]
    msg = f"{name}: {records:,} records"
    if quarantined:
        reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in stats["dropped"].items())
        msg += f", {quarantined:,} quarantined ({reasons}): see {ctx.run_dir / 'quarantine' / (name + '.jsonl')}"
    ctx.log(msg)
    if found and describe(name, found):
        ctx.log(f"warning: {describe(name, found)}")
    return stats
