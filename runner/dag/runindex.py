"""The run index: <cache>/runs.jsonl, one JSON line per finished run, appended and never rewritten, so
`recipe runs` lists them and `recipe compare` / `recipe diff` put the model's measured change next to a
recipe change. Light (no torch): review commands read it.

A line: id, recipe (name), recipe_file, recipe_digest (of the resolved document, secrets masked), document
(that resolved document), steps ({step: fingerprint} of every step the run visited), selection (only/from/
dry_run), git ({commit, dirty} when the recipe is in a repository), started/ended (UTC, ISO 8601),
metrics (flat {key: number}, read from report.json's stable keys), spread ({key: {sd, n}} where the report
knows one), gates (None until the recipe checks gates; then the gates' pass/fail).
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

from ..errors import RecipeError
from ..paths import under

INDEX = "runs.jsonl"
ENTRY_VERSION = 1


def path(cache_root: Path) -> Path:
    return under(cache_root, INDEX)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest(document: Any) -> str:
    blob = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def git_state(folder: Path) -> dict | None:
    """The commit the recipe's repository is at, and whether tracked files differ from it; None outside one."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=30)
    try:
        head = git("rev-parse", "--verify", "--quiet", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": dirty}


# --- metrics from report.json ---------------------------------------------------------------------

def metrics_of(report: dict) -> tuple[dict[str, float], dict[str, dict]]:
    """(flat metrics, spread) from report.json's documented keys: eval loss and perplexity per evaluated stage
    ("before" first) and source, generation health, the final train loss per stage, the few-shot table."""
    out: dict[str, float] = {}
    evals = [("before", report.get("before") or {})] + [
        (st["name"], ((st.get("metrics") or {}).get("eval") or {})) for st in report.get("stages", [])]
    for stage, m in evals:
        for what in ("loss", "perplexity"):
            for src, v in sorted((m.get(what) or {}).items()):
                out[f"eval.{stage}.{what}.{src}"] = v
        for what in ("stop_rate", "role_leak_rate"):
            if m.get("generations"):
                out[f"eval.{stage}.{what}"] = m.get(what)
    for st in report.get("stages", []):
        loss = ((st.get("metrics") or {}).get("train") or {}).get("train_loss")
        if loss is not None:
            out[f"train.{st['name']}.train_loss"] = loss
    spread: dict[str, dict] = {}
    for t in (report.get("few_shot_summary") or {}).get("table", []):
        head = f"few_shot.{t['model']}.k{t['shots']}"
        for what, sd in (("loss_before", None), ("loss_after", "loss_after_sd"), ("gain", "gain_sd"),
                         ("accuracy", "accuracy_sd")):
            if t.get(what) is None:
                continue
            out[f"{head}.{what}"] = t[what]
            if sd and t.get(sd) is not None and t.get("n"):
                spread[f"{head}.{what}"] = {"sd": t[sd], "n": t["n"]}
    return {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, spread


# --- writing ----------------------------------------------------------------------------------------

def entry(recipe, graph, records, report: dict, *, started: str, selection: dict) -> dict:
    """The index line of a finished run (values from the environment masked, as in report.json)."""
    from ..recipe.canonical import canonical
    from ..recipe.secrets import redact
    document = canonical(recipe)
    metrics, spread = metrics_of(report)
    ended = now()
    line = {"entry_version": ENTRY_VERSION, "id": None, "recipe": recipe.name, "recipe_file": str(recipe.file),
            "recipe_digest": digest(document), "document": document,
            "steps": {r.name: r.fingerprint for r in records if r.status != "failed"},
            "selection": selection, "git": git_state(recipe.file.parent), "started": started, "ended": ended,
            "metrics": metrics, "spread": spread, "gates": report.get("gates")}
    line["id"] = hashlib.sha256(f"{line['recipe_digest']} {started} {ended} {os.getpid()} {os.urandom(4).hex()}"
                                .encode()).hexdigest()[:10]
    return redact(line, graph.secrets, numbers=False)[0]


def append(cache_root: Path, line: dict) -> None:
    """One write of one whole line under an exclusive lock: concurrent runs never interleave or tear a line."""
    p = path(cache_root)
    p.parent.mkdir(parents=True, exist_ok=True)
    # keys in the order written: metrics go stage by stage as the recipe runs them
    data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------------------------------

def read(cache_root: Path) -> list[dict]:
    """Every line, oldest first; a torn or foreign line (a crash mid-write of an older version) is skipped."""
    try:
        text = path(cache_root).read_text(encoding="utf-8")
    except (OSError, RecipeError):
        return []
    out = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("id"), str) and isinstance(line.get("steps"), dict):
            out.append(line)
    return out


def matches(line: dict, fps: dict[str, str]) -> bool:
    """A run of exactly this recipe: it visited every step of the graph, each with the same fingerprint
    (a dry run or an --only run of part of it does not stand for the recipe's results)."""
    steps = line["steps"]
    return bool(fps) and all(steps.get(name) == fp for name, fp in fps.items())


def latest(lines: Iterable[dict], fps: dict[str, str]) -> dict | None:
    found = [x for x in lines if matches(x, fps)]
    return found[-1] if found else None


def find(lines: list[dict], ref: str) -> dict | None:
    """A run by its id or an unambiguous prefix of it (at least 4 characters)."""
    exact = [x for x in lines if x["id"] == ref]
    if exact:
        return exact[-1]
    hits = [x for x in lines if len(ref) >= 4 and x["id"].startswith(ref)]
    if len(hits) > 1:
        raise RecipeError(f"run id {ref!r} is ambiguous: " + ", ".join(x["id"] for x in hits[:5]) + "; give more of it")
    return hits[0] if hits else None
