"""filter.<src>: the recipe's row filters that apply to this source, in order.
Artifact: records.jsonl (kept), dropped.jsonl (each dropped row with its "reason")."""
from __future__ import annotations

from .base import Declared, StepId, model_files, template_files

VERSION = 1


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
    from ..data.filters import FilterContext, run_filters
    from ..data.io import read_jsonl, write_jsonl

    name, filters, tokens = ctx.step.source, ctx.params["filters"], ctx.params.get("tokens")
    fctx = FilterContext(base_dir=ctx.base_dir, max_length=tokens.get("max_length") if tokens else None,
                         token_count=_counter(ctx) if tokens else None)
    (upstream,) = ctx.step.inputs
    records = read_jsonl(ctx.input(upstream) / "records.jsonl")
    kept, dropped, stats = run_filters(name, records, filters, fctx, ctx.progress)
    write_jsonl(ctx.out / "records.jsonl", kept)
    write_jsonl(ctx.out / "dropped.jsonl", dropped)
    out = stats.to_json()
    ctx.log(f"{name}: kept {len(kept):,} of {len(records):,}"
            + (f"; dropped {', '.join(f'{k} {v}' for k, v in out['dropped'].items())}" if dropped else ""))
    return out
