"""The data engine as rows grow: `recipe run --dry-run` of a poetry-style recipe (length + repetition
filters, exact + MinHash dedup, random split, one mix, chatml render at 256 tokens) on 100k / 300k / 1M
synthetic poems (lines drawn from different real poems of data/tang_poems.jsonl), each size in a fresh
process as a user runs it. Prints wall time, rows/s of every step and the peak RSS per size, so growth
is visible (goal: 1M rows in <= 3 min, peak RSS < 2 GB, on 2 cores); then the time `recipe plan` takes
to say what a changed length threshold keeps, from the filter step's cached scores (goal: well under a
second at 300k rows).

    python bench/data_scale.py [--sizes 100000,300000,1000000] [--smoke] [--executor local,ray]

--executor local,ray runs each size on each executor in turn, in the same run (docs/ray.md), and checks that
every file of every artifact is the same bytes on each (the run fails when one differs).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _poems import poems  # noqa: E402
RECIPE = """recipe: scale
seed: 42
model: {base: builtin:tiny}
sources:
  tang:
    path: poems.jsonl
    format: fields
    fields:
      user: "以下是一首唐詩的第一句話，請用你的知識判斷並完成整首詩。\\n{{ paragraphs[0] }}"
      assistant: "{{ paragraphs[1:] | join('\\n') }}"
filters:
  - {kind: length, field: assistant, min_chars: 10, max_chars: 400}
  - {kind: repetition, max_line_repeats: 3}
  - {kind: dedup, method: exact}
  - {kind: dedup, method: minhash, threshold: 0.85, num_perm: 128}
mix: {tang: 1.0}
split: {strategy: random, eval: 0.05}
template: {chat: chatml, system: "你是一位精通唐詩的助手。", max_length: 256}
"""


WHATIF = 60   # filters[0].max_chars 400 -> 60: what plan says the length filter would keep


def write_poems(path: Path, n: int) -> None:
    """n raw records (author, title, paragraphs) of new poems made of lines from different poems."""
    with open(path, "w", encoding="utf-8") as f:
        for i, paras in enumerate(poems(n, real=False)):
            f.write(json.dumps({"id": f"s{i}", "author": "擬", "title": f"擬作 {i}", "paragraphs": paras},
                               ensure_ascii=False) + "\n")


def run_size(n: int, work: Path, executor: str = "local") -> dict:
    d = work / f"{n}-{executor}"
    d.mkdir()
    write_poems(d / "poems.jsonl", n)
    (d / "r.yaml").write_text(RECIPE, encoding="utf-8")
    cmd = [sys.executable, "-m", "runner", "run", str(d / "r.yaml"), "--dry-run", "--output", str(d / "run"),
           "--executor", executor]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status:
        sys.exit(f"size {n}: exit {status}\n{err[-3000:]}")
    report = json.loads((d / "run" / "report.json").read_text())
    steps = {s["name"]: s for s in report["steps"] if s["status"] == "ran"}
    # item 7: what a new threshold keeps, from the filter step's cached scores (plan reads no row)
    t0 = time.perf_counter()
    plan = subprocess.run([sys.executable, "-m", "runner", "plan", str(d / "r.yaml"), "--set", f"filters[0].max_chars={WHATIF}"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    plan_s = time.perf_counter() - t0
    line = next((x for x in plan.stdout.splitlines() if "from the cached scores" in x), None)
    if line is None:
        sys.exit(f"size {n}: plan gave no what-if line\n{plan.stdout}{plan.stderr[-2000:]}")
    return {"rows": n, "executor": executor, "wall": wall, "rss_gb": usage.ru_maxrss / 1e6, "steps": steps,
            "plan_s": plan_s, "artifacts": artifacts(d / ".recipe" / "cache"),
            "whatif": line.split("from the cached scores: ")[1]}


def artifacts(cache: Path) -> dict[str, tuple]:
    """{fingerprint: (step, stats, {file: sha256})} of every artifact: what two executors must write alike."""
    out = {}
    for d in sorted((cache / "objects").iterdir()):
        m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        files = {}
        for f in sorted(d.rglob("*")):
            if f.is_file() and f.name != "manifest.json":
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
                files[str(f.relative_to(d))] = h.hexdigest()
        out[d.name] = (m["step"], m["stats"], files)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--smoke", action="store_true", help="2,000 rows on local and ray (CI): the same-bytes check too")
    ap.add_argument("--executor", default=None, help="local (the default), ray, or local,ray: each size on each")
    a = ap.parse_args()
    a.executor = a.executor or ("local,ray" if a.smoke else "local")
    sizes = [2000] if a.smoke else [int(x) for x in a.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_size(n, Path(tmp), ex) for n in sizes for ex in a.executor.split(",")]
    names = list(results[0]["steps"])
    print(f"recipe run --dry-run, poetry-style recipe; cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'rows':>10}{'executor':>9}{'wall s':>9}{'peak RSS':>10}  " + "".join(f"{k:>14}" for k in names))
    for r in results:
        cells = []
        for k in names:
            s = r["steps"].get(k)
            cells.append(f"{s['rows_in'] / max(s['seconds'], 1e-9):>9,.0f} r/s" if s else f"{'':>14}")
        print(f"{r['rows']:>10,}{r['executor']:>9}{r['wall']:>9.1f}{r['rss_gb']:>8.2f}GB  " + "".join(f"{c:>14}" for c in cells))
    for r in results:   # the per-core rates a projection to N nodes starts from (docs/ray.md)
        print(f"{r['rows']:,} rows, {r['executor']}: rows/s per core " + ", ".join(
            f"{k} {s['rows_in'] / max(s['seconds'], 1e-9) / (os.cpu_count() or 1):,.0f}" for k, s in r["steps"].items()))
    for r in results:
        print(f"{r['rows']:,} rows: `recipe plan --set filters[0].max_chars={WHATIF}` {r['plan_s']:.2f} s "
              f"(process start included): filter.tang {r['whatif']}")
    for n in sizes:     # where the work ran is not what the recipe means: every executor, the same bytes
        runs = [r for r in results if r["rows"] == n]
        first = runs[0]
        for r in runs[1:]:
            a, b = first["artifacts"], r["artifacts"]
            differ = sorted(a[fp][0] for fp in a if a[fp] != b[fp]) if a.keys() == b.keys() else ["the fingerprints"]
            if differ:
                sys.exit(f"{n:,} rows: {r['executor']} wrote other bytes than {first['executor']}: {', '.join(differ)}")
            print(f"{n:,} rows: {r['executor']} and {first['executor']} wrote the same bytes "
                  f"({len(r['artifacts'])} artifacts, {sum(len(a[2]) for a in r['artifacts'].values())} files)")
    print("step seconds: " + "; ".join(f"{r['rows']:,}: " + ", ".join(f"{k} {s['seconds']:.1f}" for k, s in
                                                                      r["steps"].items()) for r in results))


if __name__ == "__main__":
    main()
