"""filter.<src>: the recipe's row filters that apply to this source, in order.
Artifact: records.jsonl (kept), dropped.jsonl (each dropped row with its "reason"), scores/ (what each
filter measured or decided of every row: `predict` answers "what would other thresholds keep?" from
it, for `recipe plan` and `recipe diff`)."""
from __future__ import annotations

from pathlib import Path

from .base import Declared, StepId, model_files, template_files

VERSION = 2   # 2: scores/


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


def _counter(ctx):
    """Tokens of a rendered record; loads the tokenizer on first use."""
    from ..chat import chat_name, token_counter, tokenizer_for
    t = ctx.params["tokens"]
    loaded = []

    def count(record: dict) -> int:
        if not loaded:
            tok = tokenizer_for(t["model"], ctx.base_dir,
                                trust_remote_code=t["trust_remote_code"] and ctx.options.trust)
            loaded.append(token_counter(tok, chat_name(t["chat"], ctx.base_dir), t["system"]))
        return loaded[0](record)
    return count


def run(ctx) -> dict:
    from ..data.filters import FilterContext, Scores, filter_rows
    from ..data.io import count_lines, dumps, iter_jsonl

    name, filters, tokens = ctx.step.source, ctx.params["filters"], ctx.params.get("tokens")
    fctx = FilterContext(base_dir=ctx.base_dir, max_length=tokens.get("max_length") if tokens else None,
                         token_count=_counter(ctx) if tokens else None)
    (upstream,) = ctx.step.inputs
    src = ctx.input(upstream) / "records.jsonl"
    ctx.out.mkdir(parents=True, exist_ok=True)
    scores = Scores(filters)
    # rows stream through: memory does not grow with the source (the scores are 8 bytes a number)
    with open(ctx.out / "records.jsonl", "w", encoding="utf-8", newline="\n") as kept, \
            open(ctx.out / "dropped.jsonl", "w", encoding="utf-8", newline="\n") as dropped:
        stats = filter_rows(name, iter_jsonl(src), filters, fctx,
                            keep=lambda r: kept.write(dumps(r) + "\n"), drop=lambda r: dropped.write(dumps(r) + "\n"),
                            progress=ctx.progress, total=count_lines(src), scores=scores)
    scores.save(ctx.out / "scores")
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
