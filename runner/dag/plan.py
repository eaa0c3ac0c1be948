"""What `recipe run` would do and why: a pure function of (graph, fingerprints, cache contents)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .cache import Cache
from .compile import Graph
from .fingerprint import Fingerprint, explain


@dataclass(frozen=True)
class PlannedStep:
    name: str
    kind: str
    stage: str | None
    status: str                 # cached | stale | new
    why: list[str]
    depends_on: list[str]
    fingerprint: str
    rows: int | None            # rows out, from this or the last run's stats, when known


def predict(kind: str, old: dict, new: dict, cache: Cache, old_fp: str) -> tuple[int, str] | None:
    """A step kind that can tell what it would output from its last artifact (the filter step's
    scores: "what would this threshold keep?") says so: (rows out, a line), else None."""
    from ..steps import STEPS

    fn = getattr(STEPS[kind], "predict", None)
    if fn is None or not cache.has(old_fp) or old.get("version") != new.get("version"):
        return None
    try:
        return fn(old, new, cache.object_dir(old_fp))
    except (OSError, ValueError, EOFError, KeyError, IndexError):
        # a prediction is a bonus read from the last artifact: one that was truncated or damaged on disk
        # (a full disk, a hand edit) means no prediction, never a failed plan or diff
        return None


def plan(graph: Graph, fps: dict[str, Fingerprint], cache: Cache) -> list[PlannedStep]:
    out = []
    for s in graph.steps:
        fp = fps[s.name]
        last = cache.last(graph.recipe, s.name)
        if cache.has(fp.value):
            status, why, stats = "cached", [], cache.stats(fp.value)
        elif last is None:
            status, why, stats = "new", ["never run"], None
        else:
            status = "stale"
            why = explain(last["components"], fp.components) if last["fingerprint"] != fp.value \
                else ["artifact missing from the cache"]
            stats = last.get("stats")
            guess = predict(s.kind, last["components"], fp.components, cache, last["fingerprint"])
            if guess is not None:
                stats = {"rows_out": guess[0]}
                why.append(guess[1])
        rows = stats.get("rows_out") if isinstance(stats, dict) else None
        out.append(PlannedStep(s.name, s.kind, s.stage, status, why, [str(i) for i in s.inputs], fp.value, rows))
    return out


def render_text(graph: Graph, steps: list[PlannedStep], cache_dir: str) -> str:
    depth: dict[str, int] = {}
    for s in steps:
        depth[s.name] = 1 + max((depth[d] for d in s.depends_on), default=-1)
    width = max(len(s.name) + 2 * depth[s.name] for s in steps) + 2
    lines = [f"{graph.recipe}  (cache: {cache_dir})"]
    for s in steps:
        label = "  " * depth[s.name] + s.name
        rows = f"  ~{s.rows:,} rows" if s.rows is not None else ""
        why = "" if s.status == "cached" else "  " + "; ".join(s.why[:4]) + (" ..." if len(s.why) > 4 else "")
        lines.append(f"  {label:<{width}} {s.status:<7}{rows}{why}")
    todo = sum(s.status != "cached" for s in steps)
    lines.append(f"{todo} step{'s' * (todo != 1)} to run, {len(steps) - todo} cached")
    lines += [f"note: {n}" for n in graph.notes]
    return "\n".join(lines) + "\n"


def render_json(steps: list[PlannedStep], graph: Graph) -> str:
    keep = ("name", "kind", "stage", "status", "why", "depends_on", "fingerprint", "rows")
    return json.dumps({"recipe": graph.recipe, "steps": [{k: asdict(s)[k] for k in keep} for s in steps],
                       "notes": list(graph.notes)}, ensure_ascii=False, indent=2) + "\n"


def render_mermaid(steps: list[PlannedStep]) -> str:
    ident = {s.name: s.name.replace(".", "_").replace("-", "_") for s in steps}
    lines = ["graph TD"]
    for s in steps:
        lines.append(f'  {ident[s.name]}["{s.name}<br/>{s.status}"]:::{s.status}')
    for s in steps:
        lines += [f"  {ident[d]} --> {ident[s.name]}" for d in s.depends_on]
    lines += ["  classDef cached fill:#d4f7d4", "  classDef stale fill:#ffe8b3", "  classDef new fill:#dde7ff"]
    return "\n".join(lines) + "\n"
