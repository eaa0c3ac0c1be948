"""load.<src>: read one source and map its rows to records.
Artifact: records.jsonl, quarantine.jsonl (rows that could not be read or mapped, with file, line
and reason)."""
from __future__ import annotations

VERSION = 2   # 2: `{{name}}` placeholders filled and reported; a hub source's `origin` in the stats adds a key


def run(ctx) -> dict:
    from ..data.formats import load_source
    from ..data.io import write_jsonl

    name = ctx.step.source
    source = ctx.recipe.sources[name]
    records, quarantine, stats = load_source(name, source, ctx.recipe.file.parent, ctx.recipe.seed)
    from ..data.placeholders import describe, fill
    found = fill(records, source.placeholders)
    if found:
        stats["placeholders"] = found
    if source.dataset is not None:
        from ..data.hub import origin
        stats["origin"] = origin(source)   # the commit read: in the manifest and the report
    write_jsonl(ctx.out / "records.jsonl", records)
    write_jsonl(ctx.out / "quarantine.jsonl", quarantine)
    msg = f"{name}: {len(records):,} records"
    if quarantine:
        reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in stats["dropped"].items())
        msg += f", {len(quarantine):,} quarantined ({reasons}): see quarantine.jsonl"
    ctx.log(msg)
    if found and describe(name, found):
        ctx.log(f"warning: {describe(name, found)}")
    return stats
