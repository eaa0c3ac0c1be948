"""Build data/verse_rules/: a FOMAML task family where fast adaptation should matter, in the explicit
layout (per task support/query/test parquet with prompt, response, metadata), for recipes/verse_rules.yaml.

    python -m runner.tools.make_verse_rules                 # rewrites data/verse_rules/
    python -m runner.tools.make_verse_rules --out DIR       # elsewhere (the test compares the bytes)

Every task maps the same prompt (an instruction and a five-character line of a Tang poem,
data/tang_poems.jsonl) to `<tag>：<the line rearranged>`. The tag (two characters, a stem and a branch
of the sexagenary cycle) and the rearrangement (copy, reverse, rotate by two, swap neighbours) are the
task's hidden rule: the prompt never says which, a handful of examples does. 14 tags x 4 rearrangements
= 56 tasks; a recipe holds 8 of them out. The lines are deduplicated, shuffled with a fixed seed and dealt
out, so no line appears in two tasks or two parts of a task."""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "verse_rules"
SIZES = {"support": 24, "query": 24, "test": 16}
PROMPT = "依本任務的規則改寫這一句：\n"
TAGS = ["甲子", "乙丑", "丙寅", "丁卯", "戊辰", "己巳", "庚午", "辛未", "壬申", "癸酉", "甲戌", "乙亥", "丙子", "丁丑"]
# each a permutation of the line's five characters
OPS = {"copy": (0, 1, 2, 3, 4), "reverse": (4, 3, 2, 1, 0), "rotate": (2, 3, 4, 0, 1), "swap": (1, 0, 3, 2, 4)}
HAN = re.compile(r"^[\u4e00-\u9fff]{5}$")


def tasks() -> list[tuple[str, str, str]]:
    """(name, tag, rearrangement) of every task, in a fixed order."""
    return [(f"r{i * len(OPS) + j:02d}_{op}", tag, op) for i, tag in enumerate(TAGS) for j, op in enumerate(OPS)]


def lines(path: Path) -> list[str]:
    """Distinct five-character lines of the poems (half-couplets split at the punctuation), in file order."""
    seen: dict[str, None] = {}
    for text in path.read_text(encoding="utf-8").splitlines():
        for para in json.loads(text)["paragraphs"]:
            for seg in re.split(r"[，。？！；、]", para):
                if HAN.match(seg):
                    seen.setdefault(seg)
    return list(seen)


def build(out: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = lines(ROOT / "data" / "tang_poems.jsonl")
    random.Random("verse_rules").shuffle(pool)
    per = sum(SIZES.values())
    names = []
    for n, (name, tag, op) in enumerate(tasks()):
        chunk = pool[n * per:(n + 1) * per]
        start = 0
        for part, size in SIZES.items():
            rows = [{"prompt": PROMPT + line, "response": tag + "：" + "".join(line[i] for i in OPS[op]),
                     "metadata": json.dumps({"tag": tag, "rule": op}, ensure_ascii=False, sort_keys=True)}
                    for line in chunk[start:start + size]]
            start += size
            (out / name).mkdir(parents=True, exist_ok=True)
            table = pa.table({c: pa.array([r[c] for r in rows], type=pa.string()) for c in ("prompt", "response", "metadata")})
            # as runner/recipe/layout.py writes a run's tasks: the same bytes every time
            pq.write_table(table, out / name / f"{part}.parquet", compression="zstd", write_statistics=False)
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    names = build(args.out)
    print(f"{len(names)} tasks in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
