"""load.<src>: read one source and map its rows to records.
Artifact: records.jsonl, quarantine.jsonl (rows that could not be read or mapped, with file, line
and reason)."""
from __future__ import annotations

from .base import Declared, StepId, plain

VERSION = 2   # 2: `{{name}}` placeholders filled and reported; a hub source's `origin` in the stats adds a key

_HUB_KEYS = ("dataset", "config", "split", "revision", "data_files", "streaming", "shuffle")


def _params(name: str, s, seed: int) -> dict:
    params: dict = {"source": plain(s), "name": name}
    if not s.placeholders:   # a key added later: without values, the key stays what it was
        del params["source"]["placeholders"]
    if s.dataset is None:   # a local source's key stays what it was before hub sources existed
        params["source"] = {k: v for k, v in params["source"].items() if k not in _HUB_KEYS}
    else:
        del params["source"]["revision"]   # the commit it names is fingerprinted instead (see _files)
        if s.shuffle is not None:
            params["seed"] = seed   # the sample drawn
    return params


def _files(s) -> tuple[str, ...]:
    """What a load step reads: a local path's bytes; for a hub dataset, the commit its revision
    resolves to (an hf://datasets/<id>@<revision> entry, see runner.data.hub); a remote URL is
    identified by the URL itself."""
    from ..data import hub
    if s.dataset is not None:
        return (hub.uri(s),)
    return () if hub.is_remote(s.path) else (s.path,)


def declare(recipe, step: StepId) -> Declared:
    s = recipe.sources[step.source]
    # The reader takes the Source itself: every key of it that changes the rows is in params, and a hub
    # revision through the commit it resolves to (files), so pinning a branch to its sha keeps the cache.
    return Declared(_params(step.source, s, recipe.seed), files=_files(s),
                    runtime={"source": s, "seed": recipe.seed})


def run(ctx) -> dict:
    from ..data.formats import stream_source
    from ..data.io import dumps
    from ..data.placeholders import Filler, describe

    name, source = ctx.params["name"], ctx.step.runtime["source"]
    fill = Filler(source.placeholders)
    ctx.out.mkdir(parents=True, exist_ok=True)
    # rows stream from the reader to the file: a source of any size loads in constant memory
    with open(ctx.out / "records.jsonl", "w", encoding="utf-8", newline="\n") as rec, \
            open(ctx.out / "quarantine.jsonl", "w", encoding="utf-8", newline="\n") as quar:
        stats = stream_source(name, source, ctx.base_dir, ctx.step.runtime["seed"],
                              keep=lambda r: rec.write(dumps(fill(r)) + "\n"),
                              put_aside=lambda q: quar.write(dumps(q) + "\n"))
    found = fill.found()
    if found:
        stats["placeholders"] = found
    if source.dataset is not None:
        from ..data.hub import origin
        stats["origin"] = origin(source)   # the commit read: in the manifest and the report
    records, quarantined = stats["rows_out"], stats["quarantined"]
    msg = f"{name}: {records:,} records"
    if quarantined:
        reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in stats["dropped"].items())
        msg += f", {quarantined:,} quarantined ({reasons}): see quarantine.jsonl"
    ctx.log(msg)
    if found and describe(name, found):
        ctx.log(f"warning: {describe(name, found)}")
    return stats
