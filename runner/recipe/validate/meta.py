"""`meta:` (FOMAML): what it cannot be combined with, its task source or explicit task files (their
columns, row counts and no test row leaking into support or query), and splits that add up."""
from __future__ import annotations

import json
from pathlib import Path

from .problems import Problems, check_regex, did_you_mean
from .sources import source_path_problem


def check_meta(d: dict, doc_dir: Path, out: Problems) -> None:
    m = d["meta"]
    if not m:
        return
    if d["stages"]:
        out.add(("meta",), "`meta` and `stages` cannot be combined: FOMAML trains one meta-stage", key=True)
    ds = d["train"]["deepspeed"] or ""
    if "zero3" in ds or (ds.endswith(".json") and _zero_stage(doc_dir / ds) == 3):
        out.add(("train", "deepspeed"), "train.deepspeed: ZeRO-3 cannot be used with `meta`: the FOMAML inner loop "
                                        "needs unpartitioned parameters; use zero2 or zero1")
    _check_tasks(d["sources"], m, doc_dir, out)
    world = d["train"]["world_size"]
    if m["outer"]["meta_batch_size"] % world:
        out.add(("meta", "outer", "meta_batch_size"),
                f"meta.outer.meta_batch_size: {m['outer']['meta_batch_size']} tasks do not divide over "
                f"train.world_size {world} processes (meta_batch_size = tasks per process x processes)")
    if m["few_shot_eval"]["answer_pattern"] is not None:
        check_regex(m["few_shot_eval"]["answer_pattern"], ("meta", "few_shot_eval", "answer_pattern"), out)
    ms = m["split"]
    total = ms["support"] + ms["query"] + ms["test"]
    if abs(total - 1) > 1e-6:
        out.add(("meta", "split"), f"meta.split: support + query + test must sum to 1, they sum to {total:g}")
    if ms["strategy"] in ("stratified", "temporal") and not ms["by"]:
        out.add(("meta", "split"), f"meta.split: strategy '{ms['strategy']}' needs `by:`")


def _check_tasks(sources: dict, m: dict, doc_dir: Path, out: Problems) -> None:
    """Tasks drawn from a source name a known one; explicit task files exist and hold usable rows."""
    t = m["tasks"]
    if isinstance(t, dict):
        if t["source"] not in sources:
            out.add(("meta", "tasks", "source"), f"meta.tasks.source: unknown source '{t['source']}'{did_you_mean(t['source'], sources)}")
        return
    bad = _duplicates(t, doc_dir, out)
    for i, task in enumerate(t):
        for part in ("support", "query", "test"):
            for j, f in enumerate(task[part]):
                problem = source_path_problem(doc_dir, f)
                if problem:
                    bad = True
                    out.add(("meta", "tasks", i, part, j), f"meta.tasks[{i}].{part}: {problem}")
    if not bad:
        _explicit_layout(doc_dir, m, out)


def _duplicates(tasks: list, doc_dir: Path, out: Problems) -> bool:
    """Two tasks of one name (the second replaced the first's rows, silently), or one file listed twice in a
    part of a task (its rows counted twice): each an error at the second occurrence."""
    bad = False
    names: dict[str, int] = {}
    for i, task in enumerate(tasks):
        first = names.setdefault(task["name"], i)
        if first != i:
            bad = True
            out.add(("meta", "tasks", i, "name"), f"meta.tasks[{i}].name: '{task['name']}' is already the name of "
                    f"meta.tasks[{first}]; task names must be unique: rename one", key=False)
        for part in ("support", "query", "test"):
            files: dict[Path, int] = {}
            for j, f in enumerate(task[part]):
                k = files.setdefault((doc_dir / f).resolve(), j)
                if k != j:
                    bad = True
                    out.add(("meta", "tasks", i, part, j), f"meta.tasks[{i}].{part}[{j}]: {f} is already listed as "
                            f"meta.tasks[{i}].{part}[{k}]; its rows would count twice: remove one", key=False)
    return bad


def _explicit_layout(doc_dir: Path, m: dict, out: Problems) -> None:
    """Explicit tasks (prompt/response/metadata files): the columns, enough rows for the inner loop
    and the k-shot sets after support_max_samples, enough tasks with test rows to hold out, and no
    test row that is also a support or query row (k-shot sets are drawn from support + query)."""
    from ..layout import read_prompt_response

    tasks, shots = m["tasks"], max(m["few_shot_eval"]["shots"])
    with_test = 0
    for i, task in enumerate(tasks):
        texts: dict[str, list[tuple[str, str]]] = {}
        for part in ("support", "query", "test"):
            texts[part] = []
            for j, f in enumerate(task[part]):
                rows, problem = read_prompt_response(doc_dir / f)
                if problem:
                    out.add(("meta", "tasks", i, part, j), f"meta.tasks[{i}].{part}: {f}: {problem}")
                    return
                texts[part] += rows
        cap = task["support_max_samples"]
        support = min(len(texts["support"]), cap) if cap else len(texts["support"])
        name = task["name"]
        if support < m["inner"]["batch_size"]:
            out.add(("meta", "tasks", i, "support"), f"meta.tasks[{i}] ({name}): {support} support rows"
                    f"{' after support_max_samples' if cap else ''}, fewer than meta.inner.batch_size "
                    f"{m['inner']['batch_size']}")
        if not texts["query"]:
            out.add(("meta", "tasks", i, "query"), f"meta.tasks[{i}] ({name}): the query files have no rows")
        if texts["test"]:
            with_test += 1
            leaked = set(texts["test"]) & (set(texts["support"]) | set(texts["query"]))
            if leaked:
                out.add(("meta", "tasks", i, "test"), f"meta.tasks[{i}] ({name}): {len(leaked)} test rows are also "
                        "support or query rows; k-shot sets are drawn from support + query, so they would be "
                        "evaluated on rows they adapted to. Remove them from one side")
            if support + len(texts["query"]) < shots:
                out.add(("meta", "tasks", i), f"meta.tasks[{i}] ({name}): {support + len(texts['query'])} support + "
                        f"query rows, fewer than the largest few-shot size {shots}")
    held = m["few_shot_eval"]["held_out_tasks"]
    if with_test < held:
        out.add(("meta", "few_shot_eval", "held_out_tasks"),
                f"meta.few_shot_eval.held_out_tasks: {held} tasks to hold out, but only {with_test} explicit "
                "tasks have `test:` files; give more tasks test files or hold out fewer")
    if len(tasks) - held < 1:
        out.add(("meta", "few_shot_eval", "held_out_tasks"),
                f"meta.few_shot_eval.held_out_tasks: {held} of {len(tasks)} tasks held out leaves none to train on")


def _zero_stage(p: Path) -> int | None:
    try:
        return json.loads(p.read_text()).get("zero_optimization", {}).get("stage")
    except (OSError, ValueError, AttributeError):
        return None
