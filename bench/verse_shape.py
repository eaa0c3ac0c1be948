"""Does a continuation look like verse? The shape of generated continuations of held-out Tang poems.

`make run` should end with a continuation that looks like verse: half-lines of 5 or 7 Han characters
between ，/。 (the shape of the poems it trains on). For the first --prompts poems that
recipes/poetry_lora.yaml evaluates on (its eval rows, listed in data/heldout_eval.jsonl: no training
phase saw them), this generates a continuation with the starting model and with each checkpoint given,
the way the run report makes its samples (evaluate_stage: the recipe's prompt mapping, template,
decoding and seed), and counts:

  half57  share of half-lines (text between ，。！？； and line breaks) of exactly 5 or 7 Han characters
  verse   share of continuations made only of such half-lines, all of one length, ending with 。
  match   share of continuations that are `verse` with the prompt's length (5 after a 5-character line)
  stop    share that ended at the end-of-turn token

    python bench/verse_shape.py runs/poetry_lora/main/final          # after `make run`
    python bench/verse_shape.py CKPT [CKPT ...] [--prompts 40] [--set KEY=VALUE ...]
    python bench/verse_shape.py --smoke                               # builtin:tiny-random, 3 prompts, fresh adapter (CI)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RECIPE = REPO / "recipes" / "poetry_lora.yaml"
HAN = re.compile(r"[\u4e00-\u9fff]")
BREAK = re.compile(r"[，。！？；\n]")


def shape(text: str, first_line: str) -> dict:
    """The counts above for one continuation of a poem whose first line is `first_line`."""
    halves = [h.strip() for h in BREAK.split(text) if h.strip()]
    lengths = [len(HAN.findall(h)) for h in halves]
    # a half-line counts only when it is Han characters and nothing else (no Latin, digits, symbols)
    good = [len(h) == n and n in (5, 7) for h, n in zip(halves, lengths)]
    verse = bool(halves) and all(good) and len(set(lengths)) == 1 and text.rstrip().endswith("。")
    want = len(HAN.findall(BREAK.split(first_line)[0]))
    return {"halves": len(halves), "halves57": sum(good), "verse": verse, "match": verse and lengths[0] == want}


def held_out_records(n: int, out: Path) -> list[str]:
    """The first n poetry_lora eval poems as records (the recipe's mapping) in `out`; their first lines."""
    from runner import api
    from runner.data.formats import make_mapper, to_record

    recipe = api.load(RECIPE, ["model.base=builtin:tiny-random"])
    ids = []
    with open(REPO / "data" / "heldout_eval.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["recipe"] == "poetry_lora" and row["source"] == "tang":
                ids.append(row["id"])
                if len(ids) == n:
                    break
    wanted, found = set(ids), {}
    with open(REPO / "data" / "tang_poems.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("id") in wanted:
                found[row["id"]] = row
    mapper = make_mapper("tang", recipe.sources["tang"])
    with open(out, "w", encoding="utf-8") as f:
        for i in ids:
            f.write(json.dumps(to_record("tang", found[i], mapper), ensure_ascii=False) + "\n")
    return [found[i]["paragraphs"][0] for i in ids]


def measure(spec, checkpoint: str | None, records: Path, first_lines: list[str]) -> dict:
    from runner.train.evaluate import evaluate_stage

    result = evaluate_stage(spec, checkpoint, {}, prompts=[], eval_records={"tang": records})
    gens = result["generations"]
    counts = [shape(g["text"], line) for g, line in zip(gens, first_lines)]
    n = len(gens)
    halves = sum(c["halves"] for c in counts)
    return {"model": checkpoint or "start", "generations": n,
            "half57": sum(c["halves57"] for c in counts) / halves if halves else 0.0,
            "verse": sum(c["verse"] for c in counts) / n, "match": sum(c["match"] for c in counts) / n,
            "stop": sum(g["stopped"] for g in gens) / n,
            "examples": [[line, g["text"]] for line, g in zip(first_lines[:3], gens[:3])],
            "texts": [g["text"] for g in gens]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", help="adapter or model folders of a poetry_lora run (e.g. "
                    "runs/poetry_lora/main/final); the starting model is always measured")
    ap.add_argument("--prompts", type=int, default=40, help="held-out poems to continue")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe overrides (default: model.base=builtin:tiny)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--smoke", action="store_true", help="builtin:tiny-random, 3 prompts, a fresh adapter as the checkpoint (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.prompts, a.set = 3, ["model.base=builtin:tiny-random"]
    sets = a.set or ["model.base=builtin:tiny"]

    from runner import api
    from runner.dag.compile import compile_recipe
    from runner.steps.base import StepId
    from runner.train.spec import EvalSpec

    recipe = api.load(RECIPE, [*sets, f"evaluate.generate.eval_prompts={a.prompts}"])
    step = compile_recipe(recipe)[StepId("evaluate", stage="main")]   # what eval.main declares
    spec = EvalSpec.of(step.params, recipe.file.parent, stage="main")
    with tempfile.TemporaryDirectory() as d:
        if a.smoke:   # a fresh LoRA adapter stands in for a run's checkpoint, so that path runs too
            a.checkpoints, a.json = [fresh_adapter(recipe, spec, Path(d) / "adapter")], a.json or Path(d) / "shape.json"
        records = Path(d) / "tang.jsonl"
        first_lines = held_out_records(a.prompts, records)
        results = [measure(spec, c, records, first_lines) for c in [None, *a.checkpoints]]
        report(recipe, results, a)
    # what must hold at any size: one generation per poem, every rate a share; an untrained adapter (B = 0)
    # writes what the starting model writes
    assert all(r["generations"] == a.prompts and 0 <= r["half57"] <= 1 for r in results)
    if a.smoke:
        assert results[1]["texts"] == results[0]["texts"], "a fresh adapter changed the generations"


def fresh_adapter(recipe, spec, folder: Path) -> str:
    """The recipe's LoRA adapter, untrained, saved where a run keeps its checkpoint."""
    from peft import LoraConfig, get_peft_model

    from runner.train.loading import load_base

    base, _ = load_base(spec)
    ad = recipe.model.adapter
    get_peft_model(base, LoraConfig(r=ad.r, lora_alpha=ad.alpha, target_modules=list(ad.target_modules),
                                    task_type="CAUSAL_LM")).save_pretrained(folder)
    return str(folder)


def report(recipe, results: list[dict], a) -> None:
    g = recipe.evaluate.generate
    print(f"{recipe.model.base}: {a.prompts} held-out poems of poetry_lora, decoding temperature {g.temperature}, "
          f"top_p {g.top_p}, no_repeat_ngram_size {g.no_repeat_ngram_size}, max_new_tokens {g.max_new_tokens}")
    print(f"  {'model':40} {'half57':>7} {'verse':>7} {'match':>7} {'stop':>7}")
    for r in results:
        print(f"  {r['model'][-40:]:40} {r['half57']:7.1%} {r['verse']:7.1%} {r['match']:7.1%} {r['stop']:7.1%}")
        for line, text in r["examples"]:
            print(f"      {line} -> {text[:60]!r}")
    if a.json:
        a.json.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
