"""`sources:` and `groups:`: every source reads from exactly one place that exists (a local path, a
remote URL, or a hub dataset checked against the local hub cache only: validate never downloads),
its `fields:` templates compile, and groups name sources."""
from __future__ import annotations

from pathlib import Path

from ...paths import READABLE, data_files
from .. import model, schema as sch
from .problems import Problems, did_you_mean, dotted

_HUB_ONLY = ("config", "revision", "data_files", "streaming", "shuffle")


def check_sources(d: dict, doc_dir: Path, out: Problems) -> None:
    sources, groups = d["sources"], d["groups"]
    if not sources and not (d["meta"] and isinstance(d["meta"]["tasks"], list)):
        out.add(("recipe",), "sources: a recipe needs at least one source (only a `meta:` recipe whose tasks are "
                             "all explicit files can do without)", key=True)
    for g, members in groups.items():
        if g in sources:
            out.add(("groups", g), f"group '{g}' has the same name as a source; rename one", key=True)
        for i, m in enumerate(members):
            if m not in sources:
                out.add(("groups", g, i), f"groups.{g}: unknown source '{m}'{did_you_mean(m, sources)}")
    for name, s in sources.items():
        p = ("sources", name)
        if s["format"] == "fields" and not s["fields"]:
            out.add(p + ("format",), f"sources.{name}: format 'fields' needs a `fields:` mapping (user, assistant, ...)")
        if s["format"] != "fields" and s["fields"]:
            out.add(p + ("fields",), f"sources.{name}: `fields:` only applies to format 'fields' (this source is '{s['format']}')", key=True)
        if s["format"] == "fields" and s["fields"]:
            _check_templates(s["fields"], p + ("fields",), out)
        _check_origin(name, s, doc_dir, out)


def _check_templates(fields: dict, path: tuple, out: Problems) -> None:
    """Compile every `fields:` template now: a syntax error is the recipe's, not the first row's."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment()
    parts = [((k,), v) for k, v in fields.items() if k != "meta"]
    parts += [(("meta", k), v) for k, v in (fields.get("meta") or {}).items()]
    for sub, src in parts:
        if not isinstance(src, str):
            continue
        try:
            env.parse(src)
        except TemplateSyntaxError as e:
            out.add(path + sub, f"{dotted(path + sub)}: invalid template: {e.message} (line {e.lineno} of the "
                                "template)", key=False)


def _check_origin(name: str, s: dict, doc_dir: Path, out: Problems) -> None:
    """Where a source's rows come from: a local path, a remote URL, or a hub dataset (its shape
    checked against the local hub cache only: validate never downloads)."""
    from ...sources import hub, remote
    p = ("sources", name)
    if (s["path"] is None) == (s["dataset"] is None):
        out.add(p, f"sources.{name}: give either `path` (a file, folder, glob or URL) or `dataset` (a hub dataset "
                   "id such as HuggingFaceH4/ultrachat_200k)" + (", not both" if s["path"] else ""))
        return
    if s["dataset"] is None:
        defaults = sch.at(("sources", name))["properties"]
        for key in _HUB_ONLY + ("split",):
            if s[key] != defaults[key]["default"]:
                out.add(p + (key,), f"sources.{name}.{key}: only applies to a hub `dataset` (this source reads `path`)")
        if remote.is_remote(s["path"]):
            problem = _remote_problem(s["path"])
        else:
            problem = source_path_problem(doc_dir, s["path"])
        if problem:
            out.add(p + ("path",), f"sources.{name}.path: {problem}")
        return
    if s["shuffle"] is not None and s["limit"] is None:
        out.add(p + ("shuffle",), f"sources.{name}.shuffle: draws a sample of `limit` rows; set `limit` too")
    src = model._build(model.Source, s)
    for key, message in hub.shape_problems(src):
        out.add(p + (key,), f"sources.{name}.{key}: {message}")


def _remote_problem(url: str) -> str | None:
    name = url.split("?", 1)[0].rstrip("/")
    if not name.endswith(READABLE) and not any(c in name.rsplit("/", 1)[-1] for c in "*?["):
        return f"cannot read {url}: a remote file must end in .jsonl, .json, .csv or .parquet"
    return None


def source_path_problem(base: Path, path: str) -> str | None:
    """What is wrong with a local data path (a file, a folder or a glob, relative to the recipe), if anything."""
    p = base / path
    if any(c in path for c in "*?["):
        hits, _ = data_files(path, base)   # symlink loops are walked once, as the loader will
        return None if hits else f"the glob {path} matches no .jsonl/.json/.csv/.parquet file"
    if p.is_dir():
        return None  # a folder of data files, or a saved `datasets` dataset; the loader says which
    if not p.exists():
        return f"file not found: {path} (paths are relative to the recipe file)"
    if not path.endswith(READABLE):
        return f"cannot read {Path(path).suffix or 'files without an extension'}; use {', '.join(READABLE)}"
    return None
