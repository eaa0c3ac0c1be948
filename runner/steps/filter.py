"""filter.<src>: the recipe's row filters that apply to this source, in order.
Artifact: records.jsonl (kept), dropped.jsonl (each dropped row with its "reason")."""
from __future__ import annotations

VERSION = 1


def run(ctx) -> dict:
    from ..data.filters import FilterContext, run_filters
    from ..data.io import read_jsonl, write_jsonl

    recipe, name = ctx.recipe, ctx.step.source
    filters = recipe.row_filters(name)
    counter = None
    if any(f.kind == "length" and f.max_tokens is not None for f in filters):
        tokens = []

        def counter(record: dict) -> int:   # loads the tokenizer on first use
            if not tokens:
                tokens.append(ctx.token_counter())
            return tokens[0](record)
    fctx = FilterContext(base_dir=recipe.file.parent, max_length=recipe.template.max_length, token_count=counter)
    records = read_jsonl(ctx.input(ctx.step.inputs[0]) / "records.jsonl")
    kept, dropped, stats = run_filters(name, records, filters, fctx, ctx.progress)
    write_jsonl(ctx.out / "records.jsonl", kept)
    write_jsonl(ctx.out / "dropped.jsonl", dropped)
    out = stats.to_json()
    ctx.log(f"{name}: kept {len(kept):,} of {len(records):,}"
            + (f"; dropped {', '.join(f'{k} {v}' for k, v in out['dropped'].items())}" if dropped else ""))
    return out
