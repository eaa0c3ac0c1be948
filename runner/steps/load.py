"""load.<src>: read one source and map its rows to records.
Artifact: records.jsonl, quarantine.jsonl (rows that could not be read or mapped, with file, line
and reason).

The source's kind (runner.sources) says which of its keys the rows depend on and what identifies its
content (the declared files); run() rebuilds the Source from exactly those, so a key it reads is a key
the fingerprint holds, by construction."""
from __future__ import annotations

from .base import Declared, StepId, plain

VERSION = 2   # 2: `{{name}}` placeholders filled and reported; a hub source's `origin` in the stats adds a key


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
    from ..data.placeholders import Filler, describe

    name, source = ctx.params["name"], _source(ctx.params["source"], ctx.step.files)
    seed = ctx.params["seed"] if "seed" in ctx.params else 0   # declared where the kind draws a sample
    fill = Filler(source.placeholders)
    ctx.out.mkdir(parents=True, exist_ok=True)
    # rows stream from the reader to the file: a source of any size loads in constant memory
    with open(ctx.out / "records.jsonl", "w", encoding="utf-8", newline="\n") as rec, \
            open(ctx.out / "quarantine.jsonl", "w", encoding="utf-8", newline="\n") as quar:
        stats = stream_source(name, source, ctx.base_dir, seed,
                              keep=lambda r: rec.write(dumps(fill(r)) + "\n"),
                              put_aside=lambda q: quar.write(dumps(q) + "\n"))
    found = fill.found()
    if found:
        stats["placeholders"] = found
    origin = sources.origin(source)
    if origin is not None:
        stats["origin"] = origin   # the commit read: in the manifest and the report
    records, quarantined = stats["rows_out"], stats["quarantined"]
    msg = f"{name}: {records:,} records"
    if quarantined:
        reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in stats["dropped"].items())
        msg += f", {quarantined:,} quarantined ({reasons}): see quarantine.jsonl"
    ctx.log(msg)
    if found and describe(name, found):
        ctx.log(f"warning: {describe(name, found)}")
    return stats
