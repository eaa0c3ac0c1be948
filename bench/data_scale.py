"""The data engine as rows grow: `recipe run --dry-run` of a poetry-style recipe (length + repetition
filters, exact + MinHash dedup, random split, one mix, chatml render at 256 tokens) on 100k / 300k / 1M
synthetic poems (lines drawn from different real poems of data/tang_poems.jsonl), each size in a fresh
process as a user runs it. Prints wall time, rows/s of every step and the peak RSS per size, so growth
is visible (goal: 1M rows in <= 3 min, peak RSS < 2 GB, on 2 cores); then the time `recipe plan` takes
to say what a changed length threshold keeps, from the filter step's cached scores (goal: well under a
second at 300k rows). It also renders the first 20,000 rows of the mix again on one thread and times the
tokenizer's own calls: that work over the cores is a floor under the dry run no executor can take off
(#22 item 7's goal, 1M rows in <= 60 s, sits below it on the 2-core machine: docs/ray.md).

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
    rows = report["stages"][0]["rows"]
    rendered = rows["train"] + sum(rows["eval"].values())      # render: the training mix and every eval file
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
            "whatif": line.split("from the cached scores: ")[1], "floor": tokenizer_floor(d), "rendered": rendered}


FLOOR_ROWS = 20_000


def tokenizer_floor(d: Path) -> dict:
    """What the tokenizer alone costs of render: the first FLOOR_ROWS rows of the mix rendered again in a fresh
    process on one thread (TOKENIZERS_PARALLELISM=false), the time inside the tokenizer's batch calls
    apart. No executor can make a dry run faster than that work spread over the cores."""
    objects = d / ".recipe" / "cache" / "objects"
    mix = next(o for o in sorted(objects.iterdir())
               if json.loads((o / "manifest.json").read_text(encoding="utf-8"))["step"].startswith("mix."))
    p = subprocess.run([sys.executable, __file__, "--floor", str(mix / "train.jsonl"), str(d / "r.yaml")], cwd=ROOT,
                       capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"})
    if p.returncode:
        sys.exit(f"the tokenizer floor: exit {p.returncode}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout)


def _floor(train: str, recipe: str) -> None:
    from runner import api
    from runner.chat import chat_name, tokenizer_for
    from runner.chat.batch import encoder
    from runner.steps.render import CHUNK, RenderBatch

    r, base = api.load(recipe), Path(recipe).parent
    tok = tokenizer_for(r.model.base, base)
    with open(train, encoding="utf-8") as f:
        lines = [x for _, x in zip(range(FLOOR_ROWS), f)]
    batch, encode, inside = RenderBatch(tok, r.template, chat_name(r.template.chat, base)), encoder(tok), [0.0]

    def timed(texts):
        t0 = time.perf_counter()
        out = encode(texts)
        inside[0] += time.perf_counter() - t0
        return out

    batch._encode = timed
    batch((0, lines[:64]))      # warm
    inside[0], t0 = 0.0, time.perf_counter()
    for i in range(0, len(lines), CHUNK):
        batch((i, lines[i:i + CHUNK]))
    whole = time.perf_counter() - t0
    print(json.dumps({"rows": len(lines), "tokenizer_us": inside[0] / len(lines) * 1e6,
                      "render_us": whole / len(lines) * 1e6}))


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
    ap.add_argument("--floor", nargs=2, metavar=("TRAIN", "RECIPE"), help=argparse.SUPPRESS)   # tokenizer_floor's process
    a = ap.parse_args()
    if a.floor:
        return _floor(*a.floor)
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
    cpus = os.cpu_count() or 1
    for r in results:   # #22 item 7: the part of a dry run no executor can take off
        f, rendered = r["floor"], r["rendered"]
        print(f"{r['rows']:,} rows, {r['executor']}: render's tokenizer alone (HF tokenizers, one thread, first "
              f"{f['rows']:,} rows of the mix) {f['tokenizer_us']:.0f} us a row of render's {f['render_us']:.0f}: "
              f">= {f['tokenizer_us'] * rendered / 1e6 / cpus:.1f} s of the {r['wall']:.1f} s run on {cpus} cores "
              f"(render {r['steps']['render.main']['seconds']:.1f} s)")
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
