"""Metric deltas between two runs from the run index (runner/dag/runindex.py): what `recipe compare` prints
and what `recipe diff` adds for a changed recipe whose two sides have run. A delta is marked as inside the
noise where the report knows a spread (the few-shot table's sd over tasks x seeds): |delta| at most two
standard errors of the difference, sqrt(sd_a^2/n_a + sd_b^2/n_b)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..dag import runindex
from ..steps.result import number


@dataclass(frozen=True)
class MetricDelta:
    key: str                  # runindex's flat key: eval.<stage>.loss.<source>, few_shot.<model>.k<shots>.gain
    label: str                # as people read it: "eval loss tang (main)"
    before: float | None      # None: the metric is not in that run
    after: float | None
    noise: float | None       # two standard errors of the difference, where a spread is known

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before

    @property
    def inside_noise(self) -> bool | None:
        if self.noise is None or self.delta is None:
            return None
        return abs(self.delta) <= self.noise


@dataclass(frozen=True)
class RunRef:
    """One side's run as the reader knows it."""
    id: str
    recipe: str
    ended: str
    commit: str | None

    @classmethod
    def of(cls, line: dict) -> "RunRef":
        git = line.get("git") or {}
        commit = git.get("commit")
        return cls(line["id"], line["recipe"], line["ended"],
                   commit[:10] + ("+dirty" if git.get("dirty") else "") if commit else None)

    def text(self) -> str:
        return f"run {self.id} ({self.recipe}, {self.ended}" + (f", {self.commit}" if self.commit else "") + ")"


@dataclass(frozen=True)
class Metrics:
    """The metrics part of a comparison: each side's run (None: that side has not run) and the deltas."""
    before: RunRef | None
    after: RunRef | None
    deltas: tuple[MetricDelta, ...]

    @property
    def note(self) -> str | None:
        if self.before is None and self.after is None:
            return "neither side has a run in the cache: `recipe run` them to compare their metrics"
        if self.after is None:
            return "not run: the new side has no run in the cache (`recipe run` it to see its metrics here)"
        if self.before is None:
            return "the old side has no run in the cache: the new side's metrics alone"
        return None


def label(key: str) -> str:
    """eval.main.loss.tang -> eval loss tang (main); few_shot.fomaml.k4.gain -> few-shot gain fomaml k=4."""
    parts = key.split(".")
    if parts[0] == "eval" and len(parts) >= 3:
        stage, what, rest = parts[1], parts[2], ".".join(parts[3:])
        return f"eval {what.replace('_', ' ')}{' ' + rest if rest else ''} ({stage})"
    if parts[0] == "train" and len(parts) == 3:
        return f"train loss ({parts[1]})"
    if parts[0] == "few_shot" and len(parts) >= 4:
        return f"few-shot {parts[-1].replace('_', ' ')} {'.'.join(parts[1:-2])} k={parts[-2][1:]}"
    return key


def _noise(key: str, a: dict, b: dict) -> float | None:
    sides = [s[key] for s in (a, b) if key in s and s[key].get("n")]
    if not sides:
        return None
    return 2 * math.sqrt(sum(s["sd"] ** 2 / s["n"] for s in sides))


def compare_runs(a: dict | None, b: dict | None) -> Metrics:
    """Deltas for every metric either run has, in the after run's order (then the before run's leftovers)."""
    ma, mb = (x.get("metrics", {}) if x else {} for x in (a, b))
    sa, sb = (x.get("spread", {}) if x else {} for x in (a, b))
    keys = list(mb) + [k for k in ma if k not in mb]
    deltas = tuple(MetricDelta(k, label(k), ma.get(k), mb.get(k), _noise(k, sa, sb)) for k in keys)
    return Metrics(RunRef.of(a) if a else None, RunRef.of(b) if b else None, deltas)


def for_sides(a, b) -> Metrics | None:
    """For `recipe diff`: the latest run in the cache of each valid side's exact fingerprints; None when
    neither side has run (nothing to say, the diff stays as it was)."""
    runs = []
    for side in (a, b):
        if side is None or side.recipe is None:
            runs.append(None)
            continue
        fps = {name: fp.value for name, fp in side.fps.items()}
        runs.append(runindex.latest(runindex.read(side.cache.root), fps))
    if runs == [None, None]:
        return None
    if runs[1] is None:   # the new side has not run: a diff says so, without the old side's numbers alone
        return Metrics(RunRef.of(runs[0]), None, ())
    return compare_runs(*runs)


def show(v: float | None) -> str:
    return "—" if v is None else number(float(v))


def delta_text(d: MetricDelta) -> str:
    """"5.78 → 5.71 (-0.07, -1.21%)", with "inside the noise (±0.06)" where a spread says so."""
    if d.delta is None:
        return f"{show(d.before)} → {show(d.after)}"
    if d.delta == 0:
        return f"{show(d.after)} (unchanged)"
    rel = f", {d.delta / d.before:+.2%}" if d.before else ""
    text = f"{show(d.before)} → {show(d.after)} ({d.delta:+.4g}{rel})"
    if d.inside_noise is not None:
        text += f" {'inside' if d.inside_noise else 'outside'} the noise (±{d.noise:.2g})"
    return text


def to_json(m: Metrics | None) -> Any:
    if m is None:
        return None
    return {"before": m.before and asdict(m.before), "after": m.after and asdict(m.after), "note": m.note,
            "deltas": [{"key": d.key, "label": d.label, "before": d.before, "after": d.after, "delta": d.delta,
                        "noise": d.noise, "inside_noise": d.inside_noise} for d in m.deltas]}
