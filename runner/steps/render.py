"""render.<stage>: conversations -> token ids and labels with the recipe's chat template, for the
stage's training mix and every source's eval rows; then the render check, which refuses to start a
run whose labels would teach the model the wrong thing (role markers trained, end-of-turn never
trained, pad == EOS, an example with nothing to learn).

Rows stream through in chunks, rendered in batches (runner.chat.batch, RenderBatch) by the run's executor
(runner/executors/: one forked worker per core locally) and written in input order, so memory does not
grow with the rows and the bytes do not depend on where the batches ran. The render check runs on every row in its cheap form (counters and set operations:
nothing trained, pad or a special token trained, end-of-turn never trained) and in full (role headers
decoded) on a sample: the first SAMPLE_HEAD rows and every SAMPLE_EVERY-th after."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..data.common import without_gc
from .base import Declared, Kind, StepId, model_files, template_files
from .result import Result, count, stage_entry

VERSION = 2


@dataclass(frozen=True)
class RenderResult(Result):
    rows: Mapping[str, Any] = field(default_factory=dict)     # {"train": n, "eval": {source: n}}
    tokens: Mapping[str, Any] | None = None                    # train, trained, truncated, eval {source: n}
    max_length: int | None = None                              # where rows were truncated

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        entry = stage_entry(report, step.stage)
        if record is not None:
            entry["rows"] = {"train": self.rows.get("train", self.rows_out), "eval": self.rows.get("eval")}
        entry["tokens"] = self.tokens
        entry["data_fingerprint"] = record.fingerprint if record is not None else None

    @classmethod
    def stage_markdown(cls, entry: dict, run_dir: Path) -> list[str]:
        rows = entry.get("rows") or {}
        return ["", f"rows: train {count(rows.get('train'))}, eval {json.dumps(rows.get('eval'), ensure_ascii=False)}"]

    def summary_head(self, step) -> str | None:
        t = self.tokens or {}
        return (f"{count(self.rows.get('train'))} train rows, {count(t.get('train', 0))} tokens "
                f"({count(t.get('trained', 0))} trained), {count(t.get('truncated', 0))} truncated at {self.max_length}")


KIND = Kind("render", per="stage", data=True, result=RenderResult)


def steps(recipe) -> list[StepId]:
    return [] if recipe.meta else [StepId("render", stage=st.name) for st in recipe.active_stages]
CHUNK = 2048                                 # rows per batch
SAMPLE_HEAD, SAMPLE_EVERY = 256, 1024
_SMALL = 4 * CHUNK                           # fewer rows than this: no worker processes


class _Digits(dict):
    """int -> str(int), remembered: joining these is twice as fast as json.dumps of the int lists."""
    def __missing__(self, i: int) -> str:
        self[i] = text = str(i)
        return text


class _Ignored(dict):
    """n -> the text of n IGNORE labels, remembered."""
    def __missing__(self, n: int) -> str:
        from ..chat.templates import IGNORE
        self[n] = text = ",".join([str(IGNORE)] * n)
        return text


def declare(recipe, step: StepId) -> Declared:
    m = recipe.model
    return Declared({"model": m.base, "trust_remote_code": m.trust_remote_code, "template": recipe.template},
                    inputs=(StepId("mix", stage=step.stage), StepId("split")),
                    files=template_files(recipe) + model_files(recipe, weights=False))


class RenderBatch:
    """The row-parallel part: a batch of mix/split lines -> (rendered lines, counts, the rows the full
    render check must see). Pure; pickles without its encoder (an executor that ships it to another
    process rebuilds that there)."""

    def __init__(self, tok, t, chat: str, check=None):
        self.tok, self.t, self.chat, self.check = tok, t, chat, check
        self._encode = None
        self._digits, self._ignored = _Digits(), _Ignored()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_encode": None, "_digits": _Digits(), "_ignored": _Ignored()}

    @without_gc
    def __call__(self, chunk: tuple[int, list[str]]) -> tuple[str, dict, list]:
        from ..chat.batch import assembled, encoder, render_pieces
        from ..chat.jinja import TemplateBudget
        from ..chat.templates import IGNORE
        from ..errors import RecipeError

        if self._encode is None:
            self._encode = encoder(self.tok)
        start, lines = chunk
        t, check, digit, ignored = self.t, self.check, self._digits.__getitem__, self._ignored.__getitem__
        value = _VALUE
        rows = [json.loads(line) for line in lines]
        try:
            pieces, parts = render_pieces([row["messages"] for row in rows], self.tok, chat=self.chat,
                                          system=t.system, train_on=t.train_on, max_length=t.max_length,
                                          encode=self._encode)
        except TemplateBudget as e:
            row = rows[e.index or 0]
            raise RecipeError(f"row {row['id']!r} of source {row.get('source')!r}: {e}; fix the template") from None
        # every piece's ids as text once (a trained piece is written twice, ids and labels); "" for no ids
        texts = [",".join(map(digit, p)) for p in pieces]
        out, flagged = [], []
        tokens = trained = truncated = eot_rows = 0
        by_source: Counter = Counter()
        for k, (row, part) in enumerate(zip(rows, parts), start):
            r = assembled(pieces, part, t.max_length)
            if r.truncated:
                ids, labels = ",".join(map(digit, r.input_ids)), ",".join(map(digit, r.labels))
            else:
                ids = ",".join(filter(None, [texts[i] for i, _ in part]))
                labels = ",".join(filter(None, [texts[i] if on else ignored(len(pieces[i])) for i, on in part]))
            source = row.get("source")
            # the bytes of json.dumps({id, source, input_ids, labels}, separators=(",", ":")), at a third of its cost
            out.append(f'{{"id":{value(row["id"])},"source":{value(source)},'
                       f'"input_ids":[{ids}],"labels":[{labels}]}}\n')
            tokens += len(r.input_ids)
            trained += len(r.labels) - r.labels.count(IGNORE)
            truncated += r.truncated
            by_source[source] += 1
            if check is not None:
                ok, eot = check.cheap(r)
                if k < SAMPLE_HEAD or k % SAMPLE_EVERY == 0 or not ok:
                    flagged.append((row["id"], r))
                eot_rows += eot
        n = {"rows": len(rows), "tokens": tokens, "trained_tokens": trained, "truncated": truncated,
             "eot_rows": eot_rows, "by_source": by_source}
        return "".join(out), n, flagged


_VALUE = json.JSONEncoder(separators=(",", ":")).encode


def _render_file(src: Path, dst: Path, tok, t, chat: str, check=None, progress=None, executor=None) -> dict:
    """Render one JSON Lines file into `dst` (rows in, rendered rows out, same order); `executor` runs the
    batches (runner.executors: the local one when None)."""
    from ..data.io import Lines, count_lines
    from ..executors import Job, get

    total_rows = count_lines(src) if progress else None

    def reduce(results) -> dict:
        """The global part: lines appended in input order, counts summed, the full check on the sample."""
        total: Counter = Counter()
        by_source: Counter = Counter()
        checked = 0
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "w", encoding="utf-8", newline="\n") as f:
            for text, n, flagged in results:
                f.write(text)
                by_source.update(n.pop("by_source"))
                total.update(n)
                for ex_id, r in flagged:     # in row order: the first bad row is the one named
                    check.example(ex_id, r)
                checked += len(flagged)
                if progress:
                    progress(total["rows"], total_rows)
        if check is not None:
            check.finish(total["rows"], total["eot_rows"])
        return {"rows": total["rows"], "tokens": total["tokens"], "trained_tokens": total["trained_tokens"],
                "truncated": total["truncated"], "checked": checked, "by_source": dict(by_source)}

    job = Job(RenderBatch(tok, t, chat, check), Lines(src, CHUNK), reduce,
              big=src.stat().st_size > _SMALL * 200, name=f"render {src.name}")   # ~200 bytes a row at the least
    return (executor or get()).run(job)


def run(ctx) -> dict:
    from ..chat import chat_name, tokenizer_for
    from ..chat.templates import RenderCheck
    p, t = ctx.params, ctx.params["template"]
    tok = tokenizer_for(p["model"], ctx.base_dir, trust_remote_code=p["trust_remote_code"] and ctx.options.trust)
    chat = chat_name(t.chat, ctx.base_dir)
    check = RenderCheck(tok, chat=chat, train_on=t.train_on)
    train = _render_file(ctx.input(StepId("mix", stage=ctx.step.stage)) / "train.jsonl",
                         ctx.store.path("train.jsonl"), tok, t, chat, check=check, progress=ctx.progress,
                         executor=ctx.executor)
    evals = {}
    for f in sorted((ctx.input(StepId("split")) / "eval").glob("*.jsonl")):
        evals[f.stem] = _render_file(f, ctx.store.path(f"eval/{f.name}"), tok, t, chat, executor=ctx.executor)
    ctx.log(f"{train['rows']:,} train rows, {train['tokens']:,} tokens ({train['trained_tokens']:,} trained), "
            f"{train['truncated']:,} truncated at {t.max_length}; render check: every row's "
            f"counters, {train['checked']:,} rows in full")
    return {"rows_in": train["rows"], "rows_out": train["rows"], "dropped": {},
            "by_source": {s: {"rows_in": c, "rows_out": c, "dropped": {}} for s, c in train["by_source"].items()},
            "rows": {"train": train["rows"], "eval": {k: v["rows"] for k, v in evals.items()}},
            "tokens": {"train": train["tokens"], "trained": train["trained_tokens"], "truncated": train["truncated"],
                       "eval": {k: v["tokens"] for k, v in evals.items()}},
            "max_length": t.max_length}
