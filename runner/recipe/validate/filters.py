"""`filters:`: each names known sources, its regular expressions compile, and the files it reads
(a detoxify checkpoint, an exclude list, decontamination's evaluation files) exist."""
from __future__ import annotations

from pathlib import Path

from .problems import Problems, check_regex, did_you_mean, dotted


def check_filters(d: dict, doc_dir: Path, out: Problems) -> None:
    sources = d["sources"]
    for i, f in enumerate(d["filters"]):
        for j, s in enumerate(f.get("sources") or []):
            if s not in sources:
                out.add(("filters", i, "sources", j), f"filters[{i}].sources: unknown source '{s}'{did_you_mean(s, sources)}")
        for key in ("pattern",):
            if f.get(key):
                check_regex(f[key], ("filters", i, key), out)
        for j, pat in enumerate((f.get("patterns") or []) + f.get("extra_patterns", [])):
            check_regex(pat, ("filters", i), out)
        if f["kind"] == "toxicity" and not (doc_dir / f["model_path"]).exists():
            out.add(("filters", i, "model_path"), f"filters[{i}].model_path: no detoxify checkpoint at {f['model_path']}; "
                    "weights cannot be downloaded here: fetch one (e.g. toxic_original-c1212f89.ckpt) elsewhere and point model_path at it")
        if f["kind"] == "exclude" and not (doc_dir / f["file"]).is_file():
            out.add(("filters", i, "file"), f"filters[{i}].file: no file at {f['file']} (relative to the recipe); "
                    "it lists the texts to keep out of training, one JSON object per line")
        if f["kind"] == "decontaminate":
            for j, name in enumerate(f["against"]):
                _check_against(name, ("filters", i, "against", j), doc_dir, out)


def _check_against(name: str, path: tuple, doc_dir: Path, out: Problems) -> None:
    where = f"{dotted(path)}: {name}"
    if not (doc_dir / name).is_file():
        out.add(path, f"{where}: no such file (relative to the recipe); name the evaluation rows to keep out of "
                "training: a JSON-lines, JSON or parquet file", key=False)
    elif Path(name).suffix not in (".jsonl", ".json", ".parquet"):
        out.add(path, f"{where}: expected a .jsonl, .json or .parquet file of evaluation rows", key=False)
