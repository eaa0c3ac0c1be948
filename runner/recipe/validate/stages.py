"""`mix`, `size`, `train`, `split` and `stages:`: shares name known sources and sum to 1, sizes are
row counts or fractions, batch sizes divide over processes, a DeepSpeed setting names a preset or a
JSON file, and each stage starts from an earlier one that is not skipped."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import model
from ..model import DEEPSPEED_PRESETS
from .problems import Problems, did_you_mean, dotted


def check_stages(d: dict, doc_dir: Path, out: Problems) -> None:
    if d["stages"]:
        if d["mix"] is not None:
            out.add(("mix",), "a recipe with `stages:` sets `mix` in each stage, not at the top level", key=True)
        order = list(d["stages"])
        for i, (name, st) in enumerate(d["stages"].items()):
            p = ("stages", name)
            if name == "before" and d["evaluate"]["before"]:
                out.add(p, "stages.before: `before` is the report's row for the starting model (evaluate.before); "
                           "rename the stage", key=True)
            _check_mix(d, st["mix"], p + ("mix",), out)
            _check_size(st["size"], p + ("size",), out)
            _check_train({**d["train"], **st["train"]}, p + ("train",), doc_dir, out)
            _check_start(d, i, name, st, order, out)
    else:
        _check_mix(d, d["mix"], ("mix",), out)
    _check_size(d["size"], ("size",), out)
    _check_train(d["train"], ("train",), doc_dir, out)
    sp = d["split"]
    if sp["strategy"] in ("stratified", "temporal") and not sp["by"]:
        out.add(("split",), f"split: strategy '{sp['strategy']}' needs `by:` (the field to {'stratify' if sp['strategy'] == 'stratified' else 'order'} by)")


def _check_start(d: dict, i: int, name: str, st: dict, order: list[str], out: Problems) -> None:
    """A stage starts from an earlier stage (its `from`, else the one before it) whose weights exist."""
    p = ("stages", name)
    if st["from"] is not None:
        if st["from"] not in order:
            out.add(p + ("from",), f"stages.{name}.from: unknown stage '{st['from']}'{did_you_mean(st['from'], order)}")
        elif order.index(st["from"]) >= i:
            out.add(p + ("from",), f"stages.{name}.from: '{st['from']}' does not come before '{name}'; a stage starts from an earlier one")
    start = st["from"] if st["from"] is not None else (order[i - 1] if i else None)
    if start in d["stages"] and d["stages"][start]["skip"] and not st["skip"] and not d["model"]["init_from"]:
        out.add(p, f"stages.{name}: it starts from stage '{start}', which is skipped; set model.init_from "
                   f"to that stage's saved weights (e.g. runs/<recipe>/{start}/final)")
    if st["ewc"] is not None and i == 0:
        out.add(p + ("ewc",), f"stages.{name}.ewc: the first stage has no earlier stage to protect", key=True)


def _check_mix(d: dict, mix: dict | None, path: tuple, out: Problems) -> None:
    if mix is None:
        return
    groups = d["groups"]
    names = list(d["sources"]) + list(groups)
    seen: dict[str, str] = {}
    for k, ratio in mix.items():
        if k not in names:
            out.add(path + (k,), f"{dotted(path)}: unknown source or group '{k}'{did_you_mean(k, names)}", key=True)
            continue
        if ratio <= 0:
            out.add(path + (k,), f"{dotted(path)}.{k}: a share must be positive, got {ratio} "
                                 "(leave the source out of the mix instead)")
        for s in groups.get(k, [k]):
            if s in seen:
                out.add(path + (k,), f"{dotted(path)}: source '{s}' is in the mix twice (via '{seen[s]}' and '{k}')", key=True)
            seen[s] = k
    total = sum(r for r in mix.values() if isinstance(r, (int, float)))
    if abs(total - 1.0) > 1e-6 and all(r > 0 for r in mix.values()):
        out.add(path, f"{dotted(path)}: shares must sum to 1 (they are shares of the final mix), "
                      f"they sum to {total:g}")


def _check_size(size: Any, path: tuple, out: Problems) -> None:
    if size is None:
        return
    if isinstance(size, int) and size < 1:
        out.add(path, f"{dotted(path)}: a row count must be at least 1, got {size}")
    elif isinstance(size, float) and not 0 < size <= 1:
        out.add(path, f"{dotted(path)}: a fraction must be in (0, 1], got {size} "
                      "(write an integer for a row count)")


def _check_train(t: dict, path: tuple, doc_dir: Path, out: Problems) -> None:
    if not all(isinstance(t[k], int) and t[k] >= 1 for k in ("batch_size", "world_size")) or \
            not (t["micro_batch_size"] == "auto" or isinstance(t["micro_batch_size"], int) and t["micro_batch_size"] >= 1):
        return   # the schema pass has reported it
    if t["micro_batch_size"] == "auto":   # auto picks a divisor of batch_size / world_size
        if t["batch_size"] % t["world_size"]:
            out.add(path + ("batch_size",), f"{dotted(path)}: batch_size {t['batch_size']} is not a multiple of "
                          f"world_size {t['world_size']}; every process must get the same number of sequences")
        problem = None
    else:
        problem = model.batch_problem(t["batch_size"], t["micro_batch_size"], t["world_size"])
    if problem:
        out.add(path + ("batch_size",), f"{dotted(path)}: {problem}")
    if t.get("shapes") == "bucketed" and (t["packing"] or t["padding_free"]):
        out.add(path + ("shapes",), f"{dotted(path)}.shapes: bucketed pads every micro batch to a fixed shape, "
                                    "which packing and padding_free exist to avoid; turn those off or use shapes: dynamic")
    ds = t["deepspeed"]
    if ds is not None and ds not in DEEPSPEED_PRESETS:
        p = (doc_dir / ds)
        if not ds.endswith(".json"):
            out.add(path + ("deepspeed",), f"{dotted(path)}.deepspeed: unknown preset '{ds}'"
                                           f"{did_you_mean(ds, DEEPSPEED_PRESETS)} (or give a path to a .json file)")
        elif not p.is_file():
            out.add(path + ("deepspeed",), f"{dotted(path)}.deepspeed: file not found: {ds}")
        else:
            try:
                if not isinstance(json.loads(p.read_text()), dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                out.add(path + ("deepspeed",), f"{dotted(path)}.deepspeed: {ds} is not a valid DeepSpeed JSON ({e})")
