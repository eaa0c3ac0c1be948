"""filter.<src>: the recipe's row filters that apply to this source, in order.
Artifact: records.jsonl (kept), dropped.jsonl (each dropped row with its "reason"), scores/ (what each
filter measured or decided of every row: `predict` answers "what would other thresholds keep?" from
it, for `recipe plan` and `recipe diff`)."""
from __future__ import annotations

from pathlib import Path

from .base import Declared, Kind, StepId, model_files, template_files

VERSION = 2   # 2: scores/
KIND = Kind("filter", per="source", data=True, column="filtered")


def steps(recipe) -> list[StepId]:
    return [StepId("filter", source=src) for src in recipe.sources if wanted(recipe, src)]


def wanted(recipe, source: str) -> bool:
    return bool(recipe.row_filters(source))


def tip(recipe, source: str) -> StepId:
    """The last per-source data step of `source`: what dedup (or the split) reads."""
    return StepId("filter", source=source) if wanted(recipe, source) else StepId("load", source=source)


def declare(recipe, step: StepId) -> Declared:
    row = recipe.row_filters(step.source)
    params: dict = {"filters": row}
    files: tuple[str, ...] = tuple(f.model_path for f in row if f.kind == "toxicity")
    files += tuple(f.file for f in row if f.kind == "exclude")   # the held-out list's bytes
    files += tuple(a for f in row if f.kind == "decontaminate" for a in f.against)   # the eval sets' bytes
    counted = [f for f in row if f.kind == "length" and f.max_tokens is not None]
    if counted:
        # only what changes a token count: not train_on, and max_length only when it is the limit
        m, t = recipe.model, recipe.template
        params["tokens"] = {"model": m.base, "trust_remote_code": m.trust_remote_code, "chat": t.chat,
                            "system": t.system}
        if any(f.max_tokens == "max_length" for f in counted):
            params["tokens"]["max_length"] = t.max_length
        files += template_files(recipe) + model_files(recipe, weights=False)
    return Declared(params, inputs=(StepId("load", source=step.source),), files=files)


class _Counter:
    """Tokens of a rendered record; loads the tokenizer on first use (in the process that counts)."""
    def __init__(self, t: dict, base_dir: Path, trust: bool):
        self.t, self.base_dir, self.trust, self.count = t, base_dir, trust, None

    def __call__(self, record: dict) -> int:
        if self.count is None:
            from ..chat import chat_name, token_counter, tokenizer_for
            t = self.t
            tok = tokenizer_for(t["model"], self.base_dir, trust_remote_code=t["trust_remote_code"] and self.trust)
            self.count = token_counter(tok, chat_name(t["chat"], self.base_dir), t["system"])
        return self.count(record)


CHUNK = 4096   # rows per batch


def filter_batch(source: str, filters, fctx, chunk: tuple[int, list[str]]) -> tuple[str, str, dict, list]:
    """The row-parallel part: a batch of lines -> (kept lines, dropped lines, counts, score columns)."""
    import json

    from ..data.filters import Scores, filter_rows
    from ..data.io import dumps

    kept: list[str] = []
    dropped: list[str] = []
    part = Scores(filters)
    rows = [json.loads(line) for line in chunk[1]]
    # A kept row no filter changed (a filter returns a changed row as a new dict) is written as the line it
    # came as: the upstream step wrote that line with io.dumps, so it is the bytes dumps would give again.
    line_of = {id(r): line for r, line in zip(rows, chunk[1])}

    def keep(r: dict) -> None:
        line = line_of.get(id(r))
        kept.append(line if line is not None and line.endswith("\n") else dumps(r) + "\n")

    st = filter_rows(source, rows, filters, fctx, keep=keep, drop=lambda r: dropped.append(dumps(r) + "\n"),
                     scores=part).to_json()
    return "".join(kept), "".join(dropped), st, part.columns


def run(ctx) -> dict:
    from functools import partial

    from ..data.filters import FilterContext, Scores
    from ..data.io import Lines, count_lines
    from ..data.stats import Stats
    from ..executors import Job

    name, filters, tokens = ctx.step.source, ctx.params["filters"], ctx.params.get("tokens")
    fctx = FilterContext(base_dir=ctx.base_dir, max_length=tokens.get("max_length") if tokens else None,
                         token_count=_Counter(tokens, ctx.base_dir, ctx.options.trust) if tokens else None)
    (upstream,) = ctx.step.inputs
    src = ctx.input(upstream) / "records.jsonl"
    total = count_lines(src)
    scores = Scores(filters)
    stats = Stats([name])

    def reduce(results) -> None:
        """The global part: the batches' lines appended in input order, their counts and scores summed."""
        done = 0
        with ctx.store.open("records.jsonl") as kept, ctx.store.open("dropped.jsonl") as dropped:
            for kept_text, dropped_text, st, columns in results:
                kept.write(kept_text)
                dropped.write(dropped_text)
                stats.seen(name, st["rows_in"])
                stats.kept(name, st["rows_out"])
                for reason, n in st["dropped"].items():
                    stats.dropped(name, reason, n)
                scores.extend(columns)
                done += st["rows_in"]
                ctx.progress(done, total)

    # A toxicity model's torch thread pool does not survive a fork.
    ctx.executor.run(Job(partial(filter_batch, name, filters, fctx), Lines(src, CHUNK), reduce,
                         big=total > 4 * CHUNK, forkable=not any(f.kind == "toxicity" for f in filters),
                         name=ctx.step.name))
    stats.assert_balanced()
    scores.save(ctx.store.path("scores"))
    out = stats.to_json()
    ctx.log(f"{name}: kept {out['rows_out']:,} of {out['rows_in']:,}"
            + (f"; dropped {', '.join(f'{k} {v}' for k, v in out['dropped'].items())}" if out["dropped"] else ""))
    return out


def predict(old: dict, new: dict, artifact: Path) -> tuple[int, str] | None:
    """What this step would keep with the `new` fingerprint components, from the scores of the run
    with the `old` ones (its artifact): (rows out, a line for plan/diff), or None when the scores
    cannot tell (other input rows, a changed unscored filter, a number that was not measured)."""
    from ..data.filters import FilterContext, whatif
    from ..recipe.model import _filter

    import json

    if old.get("inputs") != new.get("inputs") or old.get("files") != new.get("files") \
            or old["params"].get("tokens") != new["params"].get("tokens") or old.get("env") != new.get("env") \
            or not (artifact / "scores").is_dir():
        return None
    if '"***"' in json.dumps([old["params"], new["params"]]):   # a value from the environment: not shown, not known
        return None
    try:
        a, b = ([_filter(d) for d in c["params"]["filters"]] for c in (old, new))
    except (KeyError, TypeError):
        return None
    tokens = new["params"].get("tokens") or {}
    got = whatif(a, b, artifact / "scores", FilterContext(max_length=tokens.get("max_length")))
    if got is None:
        return None
    drops = ", ".join(f"{k} {v:,}" for k, v in got["dropped"].items()) or "nothing"
    line = f"from the cached scores: keeps {got['rows_out']:,} of {got['rows_in']:,} rows (drops {drops})"
    if got["unknown"]:
        line = line.replace("keeps ", "keeps at most ", 1)
        line += f"; {got['unknown']:,} of them would reach a filter that has not seen them"
    return got["rows_out"], line
