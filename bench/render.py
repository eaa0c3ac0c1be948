"""The render step (conversations -> input_ids/labels + the render check) on poetry rows as
recipes/poetry_lora.yaml renders them (chatml, system prompt, 256 tokens): the batched, streamed step
with 1 worker and with one worker per core, next to the row-by-row rendering it replaced (one
templates.render call per row, every example kept for a full render check), in the same run. The
outputs are compared byte for byte. Goal: >= 20,000 rows/s on 2 cores.

    python bench/render.py [--rows 100000] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _poems import write_messages  # noqa: E402

RECIPE = """recipe: bench_render
model: {base: builtin:tiny}
sources: {tang: {path: rows.jsonl, format: messages}}
template: {chat: chatml, system: "你是一位精通唐詩的助手。", train_on: assistant, max_length: 256}
"""


def write_rows(path: Path, n: int) -> None:
    """n poems: the real ones first, then new ones from lines of different poems (as the issue's scale runs)."""
    write_messages(path, n, source="tang")


def row_by_row(src: Path, dst: Path, tok, recipe) -> None:
    """The render step before batching: one render() per row, every example kept, then the check."""
    from runner.chat.templates import check_rendered, render
    t = recipe.template
    keep = []
    with open(dst, "w", encoding="utf-8") as f:
        for line in open(src, encoding="utf-8"):
            row = json.loads(line)
            r = render(row["messages"], tok, chat="chatml", system=t.system, train_on=t.train_on,
                       max_length=t.max_length)
            f.write(json.dumps({"id": row["id"], "source": row.get("source"), "input_ids": r.input_ids,
                                "labels": r.labels}, separators=(",", ":")) + "\n")
            keep.append((row["id"], r))
    check_rendered(keep, tok, chat="chatml", train_on=t.train_on)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--baseline-rows", type=int, default=20_000, help="rows for the slow row-by-row baseline")
    ap.add_argument("--smoke", action="store_true", help="3,000 rows (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.rows = a.baseline_rows = 3_000
    from runner import api
    from runner.chat import tokenizer_for
    from runner.chat.templates import RenderCheck
    from runner.data.parallel import cpus
    from runner.steps import render as step

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_rows(d / "rows.jsonl", a.rows)
        (d / "r.yaml").write_text(RECIPE, encoding="utf-8")
        recipe = api.load(d / "r.yaml")
        tok = tokenizer_for(recipe.model.base, recipe.file.parent)
        with open(d / "rows.jsonl", encoding="utf-8") as f, open(d / "head.jsonl", "w", encoding="utf-8") as h:
            h.writelines(line for _, line in zip(range(a.baseline_rows), f))

        def timed(fn) -> tuple[float, float]:
            cpu0 = os.times()
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
            cpu1 = os.times()
            cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system) + (cpu1.children_user - cpu0.children_user) \
                + (cpu1.children_system - cpu0.children_system)
            return wall, cpu

        base_wall, base_cpu = timed(lambda: row_by_row(d / "head.jsonl", d / "base.jsonl", tok, recipe))
        results = {}
        for workers in sorted({1, cpus()}):
            os.environ["RECIPE_WORKERS"] = str(workers)
            out = d / f"w{workers}.jsonl"
            results[workers] = timed(lambda: step._render_file(d / "rows.jsonl", out, tok, recipe.template, "chatml",
                                                               check=RenderCheck(tok, chat="chatml")))
            step._render_file(d / "head.jsonl", d / "head_out.jsonl", tok, recipe.template, "chatml")
            assert (d / "head_out.jsonl").read_bytes() == (d / "base.jsonl").read_bytes(), "output differs"
        print(f"render, builtin:tiny, chatml at 256 tokens; cpus {cpus()}, load average {os.getloadavg()[0]:.1f}")
        print(f"  {'':32}{'rows':>9}{'rows/s':>10}{'rows/cpu-s':>12}")
        print(f"  {'row by row (before)':32}{a.baseline_rows:>9,}{a.baseline_rows / base_wall:>10,.0f}"
              f"{a.baseline_rows / base_cpu:>12,.0f}")
        for workers, (wall, cpu) in results.items():
            print(f"  {f'batched, {workers} worker(s)':32}{a.rows:>9,}{a.rows / wall:>10,.0f}{a.rows / cpu:>12,.0f}")
        best = max(a.rows / w for w, _ in results.values())
        print(f"  speed-up {best / (a.baseline_rows / base_wall):.1f}x wall, "
              f"{(a.rows / min(c for _, c in results.values())) / (a.baseline_rows / base_cpu):.1f}x per CPU second; "
              f"output identical to row by row; goal >= 20,000 rows/s on 2 cores")


if __name__ == "__main__":
    main()
