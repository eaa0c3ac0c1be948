"""Write data/heldout_eval.jsonl: the rows the shipped recipes evaluate on, so that pretraining
builtin:tiny (recipes/tiny_pretrain.yaml, filter `kind: exclude`) never sees them.

For each shipped recipe it runs the data steps up to `split` (in a temporary cache, with the recipe's
own seed, filters and split settings) and lists every eval row, and for the FOMAML recipe every
task's test rows, by source. One line per row: recipe, source, side, id and the sha1 of the
normalised assistant text (the field the exclude filter matches). Run by `make tiny-model`:

    python -m runner.tools.make_heldout
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from runner.data.filters.exclude import digest
from runner.data.text import text

ROOT = Path(__file__).resolve().parents[2]
# stage2_correction extends curriculum_3stage with the same sources, filters and split: same eval rows.
RECIPES = ("poetry_lora", "curriculum_3stage", "stage2_correction", "fomaml_poets")
OUT = ROOT / "data" / "heldout_eval.jsonl"


def split_dir(recipe: str, cache: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "runner", "run", str(ROOT / "recipes" / f"{recipe}.yaml"),
         "--set", "model.base=builtin:tiny", "--only", "split",
         "--cache-dir", str(cache), "--output", str(cache.parent / "runs" / recipe)],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    index = json.loads((cache / "index" / recipe / "split.json").read_text(encoding="utf-8"))
    return cache / "objects" / index["fingerprint"]


def held_out(recipe: str, d: Path):
    """(source, side, record) for every row the recipe evaluates on."""
    for f in sorted((d / "eval").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            yield f.stem, "eval", json.loads(line)
    for f in sorted((d / "tasks").glob("*/test.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            yield r["source"], "test", r


def main() -> None:
    rows, seen = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in RECIPES:
            for source, side, r in held_out(recipe, split_dir(recipe, Path(tmp) / "cache")):
                sha1 = digest(text(r, "assistant"))
                if (sha1, r["source"]) in seen:
                    continue
                seen.add((sha1, r["source"]))
                rows.append({"recipe": recipe, "source": source, "side": side, "id": str(r["id"]), "sha1": sha1})
    with open(OUT, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    counts: dict[str, int] = {}
    for row in rows:
        counts[f"{row['recipe']}/{row['source']}/{row['side']}"] = counts.get(f"{row['recipe']}/{row['source']}/{row['side']}", 0) + 1
    print(f"wrote {OUT.relative_to(ROOT)}: {len(rows)} rows", json.dumps(counts, ensure_ascii=False))


if __name__ == "__main__":
    main()
