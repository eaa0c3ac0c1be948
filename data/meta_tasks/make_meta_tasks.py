"""Builds data/meta_tasks/: explicit FOMAML tasks in the prompt/response/metadata layout, for
recipes/fomaml_explicit.yaml. Run from the repository root: python data/meta_tasks/make_meta_tasks.py

- math_<n>step: GSM8K problems (data/gsm8k_train.jsonl) whose worked answer has n calculator steps
  (`<<...>>` annotations; 5step = 5 or more); the response ends with the `#### <answer>` line.
- poet_<name>: Tang poems (data/tang_poems.jsonl) of one poet: the first line -> the rest of the poem.
Per task: a seeded shuffle, then support / query / test rows (disjoint by construction)."""
import json
import random
import re
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "meta_tasks"
SIZES = {"support": 24, "query": 24, "test": 16}
POETS = {"libai": "李白", "dufu": "杜甫", "baijuyi": "白居易", "wangwei": "王維"}
USER = "以下是一首唐詩的第一句話，請用你的知識判斷並完成整首詩。\n"


def write(task: str, rows: list[dict]) -> None:
    random.Random(f"meta_tasks:{task}").shuffle(rows)
    start = 0
    for part, n in SIZES.items():
        chunk = rows[start:start + n]
        start += n
        assert len(chunk) == n, (task, part, len(chunk))
        (OUT / task).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({c: [r[c] for r in chunk] for c in ("prompt", "response", "metadata")}),
                       OUT / task / f"{part}.parquet", compression="zstd")


def main() -> None:
    math = defaultdict(list)
    for line in (ROOT / "data" / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        steps = min(len(re.findall(r"<<", r["answer"])), 5)
        if steps >= 2:
            math[steps].append({"prompt": r["question"], "response": r["answer"],
                                "metadata": json.dumps({"steps": steps})})
    for steps, rows in sorted(math.items()):
        write(f"math_{steps}step", rows)
    poems = defaultdict(list)
    wanted = {v: k for k, v in POETS.items()}
    for line in (ROOT / "data" / "tang_poems.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("author") in wanted and len(r["paragraphs"]) >= 2:
            poems[wanted[r["author"]]].append({"prompt": USER + r["paragraphs"][0],
                                               "response": "\n".join(r["paragraphs"][1:]),
                                               "metadata": json.dumps({"author": r["author"], "title": r["title"]},
                                                                      ensure_ascii=False)})
    for key, rows in sorted(poems.items()):
        write(f"poet_{key}", rows)


if __name__ == "__main__":
    main()
