"""Source kind `hub`: a dataset by id on the Hugging Face Hub.

A hub source is read with `datasets` (its real loading code) and pinned to a commit: its identity is
the sha its revision resolves to (so pinning a branch to that sha keeps the cache), recorded in the
run report too.

Offline first. huggingface_hub keeps a cache laid out as
    <HF_HUB_CACHE>/datasets--<owner>--<name>/refs/<revision>      the sha a branch or tag last resolved to
                                            /snapshots/<sha>/...    the repository's files at that commit
`validate` and `plan` only read that layout (plain files, no network, no heavy import), so they can say
which sha a source stands for and which configs and splits it has. `recipe run` asks the hub once per
source which sha the revision names now (one request, no retries; skipped for a cached pinned sha, for
HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1, and when the network is down), so a dataset that moved makes
its load step stale; the rows then come from the cached snapshot when it has them, else from the hub."""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from ..errors import RecipeError
from . import hub_arrow
from .hub_arrow import shard_rows  # noqa: F401  (the kind's shard_rows: a slice's rows)
from .readers import Raw

SHA = re.compile(r"[0-9a-f]{40}")
# the hub's rules (huggingface_hub.utils.validate_repo_id; a test checks we agree): each part 1-96 ASCII word
# characters, '-' and '.', starting and ending with a word character; no "--" or ".."; no ".git" at the end
_PART = r"\w(?:[\w.-]{0,94}\w)?"
_ID = re.compile(rf"(?:{_PART}/)?{_PART}", re.ASCII)
_REV = re.compile(r"[\w.+@=-]+(?:/[\w.+@=-]+)*")
_SPLIT = re.compile(r"\w+(?:\.\w+)*")   # the split names `datasets` accepts
HUB_URI = "hf://datasets/"        # how a hub source appears among a step's fingerprinted files


# --- the source kind ---------------------------------------------------------------------------------

def claims(source) -> bool:
    return source.dataset is not None


def owns(entry: str) -> bool:
    """hf://datasets/<id>[@<revision>]: a remote hf:// file URL has a path after the id, and is not ours."""
    return entry.startswith(HUB_URI) and _ID.fullmatch(entry[len(HUB_URI):].partition("@")[0]) is not None


def files(source) -> tuple[str, ...]:
    """The load step's fingerprint entry: its digest is the sha the revision resolves to."""
    return (HUB_URI + source.dataset + (f"@{source.revision}" if source.revision is not None else ""),)


def params(source: dict) -> dict:
    """Every key but the revision: the commit it names is the entry's digest instead."""
    return {k: v for k, v in source.items() if k != "revision"}


def restore(entry: str) -> dict:
    """The source keys the entry holds rather than the params: the revision as written."""
    _, at, revision = entry[len(HUB_URI):].partition("@")
    return {"revision": revision if at else None}


def seeded(source) -> bool:
    return source.shuffle is not None   # the sample `shuffle` draws


def key(entry: str) -> str:
    """Keyed by the id, not by the revision that names the commit: pinning a branch to the sha it
    resolves to keeps the cache."""
    return entry.partition("@")[0]


def digest(entry: str, base_dir: Path, digests) -> str:
    """Light: reads the local hub cache's refs (`recipe run` refreshes them first)."""
    dataset_id, _, revision = entry[len(HUB_URI):].partition("@")
    return resolved_sha(dataset_id, revision or None) or f"unresolved {revision or 'main'}"


def changed(entry: str, old: str, new: str) -> str:
    return f"dataset {entry[len(HUB_URI):]} moved: {old[:12]} -> {new[:12]}"   # or was re-pinned


def rows(name: str, source, base_dir: Path, seed: int) -> Iterator:
    """The source's rows as readers.Raw rows, `limit` and `shuffle` applied."""
    return (Raw(label, None, row, obj) for label, row, obj in iter_dataset(name, source, seed))


def notes(name: str, source) -> list[str]:
    return revision_notes({name: source})


# --- names ---------------------------------------------------------------------------------------

def id_problem(dataset_id: str) -> str | None:
    """Why `dataset_id` cannot be a hub dataset id (the hub's rules), or None."""
    if not _ID.fullmatch(dataset_id) or "--" in dataset_id or ".." in dataset_id or dataset_id.endswith(".git"):
        return (f"'{dataset_id}' is not a hub dataset id: use owner/name (letters, digits, '-', '_', '.'), "
                "e.g. HuggingFaceH4/ultrachat_200k")
    return None


def revision_problem(revision: str) -> str | None:
    """A branch, tag or sha names a file under the cache's refs/: no '..', no absolute path (git's rules)."""
    parts = revision.split("/")
    if revision.startswith("/") or any(p in ("", ".", "..") for p in parts) or not _REV.fullmatch(revision):
        return f"'{revision}' is not a branch, tag or commit sha"
    return None


def data_files_problem(data_files) -> str | None:
    """Why `data_files` may reach outside the pinned snapshot, or None. Its globs are read relative to the
    repository at the pinned commit, and the commit is all the fingerprint holds: a path out of it (`..`,
    an absolute path, a URL, another repository's hf:// path) would be read unfingerprinted, so appending
    to that file would change no step."""
    if isinstance(data_files, str):
        globs = [data_files]
    elif hasattr(data_files, "values"):   # {split: a glob or a list of globs}
        globs = [g for v in data_files.values() for g in ([v] if isinstance(v, str) else v)]
    else:
        globs = list(data_files)
    for g in globs:
        norm = g.replace("\\", "/")
        if norm.startswith(("/", "~")) or "://" in norm or re.match(r"[A-Za-z]:", norm) or ".." in norm.split("/"):
            return (f"'{g}' leaves the dataset's repository; `data_files` are globs relative to it "
                    "(e.g. data/train-*.parquet), read at the pinned commit")
    return None


def split_problem(split: str) -> str | None:
    if not _SPLIT.fullmatch(split):
        return f"'{split}' is not a split name (letters, digits, '_' and '.'; use `limit` rather than a slice)"
    return None


def offline() -> bool:
    """No network for datasets: HF_DATASETS_OFFLINE when set, else HF_HUB_OFFLINE (as `datasets` decides)."""
    value = os.environ.get("HF_DATASETS_OFFLINE")
    if value is None:
        value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def prefetch_hint(dataset_id: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (f"pre-fetch it where there is network with `hf download {dataset_id} --repo-type dataset{rev}` "
            f"(then copy {cache_root()} here, or point HF_HUB_CACHE at it)")


# --- the local hub cache (plain file reads: validate and plan use these) --------------------------

def cache_root() -> Path:
    """huggingface_hub's cache folder, from the environment as huggingface_hub reads it."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _repo(dataset_id: str) -> Path:
    return cache_root() / ("datasets--" + dataset_id.replace("/", "--"))


def resolved_sha(dataset_id: str, revision: str | None) -> str | None:
    """The commit `revision` (default: main) names: itself when it is a sha, else what the local
    cache last resolved it to (refs/<revision>), or None when it never was."""
    rev = revision or "main"
    if SHA.fullmatch(rev):
        return rev
    if revision_problem(rev):
        return None
    try:
        sha = (_repo(dataset_id) / "refs" / rev).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return sha if SHA.fullmatch(sha) else None


def snapshot(dataset_id: str, sha: str) -> Path:
    return _repo(dataset_id) / "snapshots" / sha


def _card(snap: Path) -> dict:
    """The YAML header of the dataset card (README.md), or {}."""
    try:
        text = (snap / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---"):
        return {}
    try:
        card = yaml.safe_load(text[3:].split("\n---", 1)[0])
    except yaml.YAMLError:
        return {}
    return card if isinstance(card, dict) else {}


def card_configs(snap: Path) -> tuple[dict[str, set[str] | None], str | None]:
    """(config name -> its split names, the config read when none is named), from the dataset card's
    YAML (`configs:` and `dataset_info:`). Split names are None where the card does not say (datasets
    then infers them from file names); ({}, None) when there is no card."""
    card = _card(snap)
    if not card:
        return {}, None
    out: dict[str, set[str] | None] = {}
    marked = None
    configs = card.get("configs")
    for c in configs if isinstance(configs, list) else []:
        if isinstance(c, dict) and isinstance(c.get("config_name"), str):
            files = c.get("data_files")
            dicts = isinstance(files, list) and files and all(isinstance(f, dict) for f in files)
            out[c["config_name"]] = {f["split"] for f in files if "split" in f} if dicts else {"train"}
            if c.get("default") is True:
                marked = c["config_name"]
    infos = card.get("dataset_info")
    for info in (infos if isinstance(infos, list) else [infos] if isinstance(infos, dict) else []):
        if isinstance(info, dict) and isinstance(info.get("splits"), list):
            names = {s["name"] for s in info["splits"] if isinstance(s, dict) and "name" in s}
            if names:
                out.setdefault(info.get("config_name") or "default", names)
    default = marked or ("default" if "default" in out else next(iter(out)) if len(out) == 1 else None)
    return out, default


def shape_problems(source) -> list[tuple[str, str]]:
    """(key, message) for what is wrong with a hub source's shape, from the local cache only: the id
    always; the config and split names when the card of the sha it resolves to is cached."""
    problems = []
    bad = id_problem(source.dataset)
    if bad:
        return [("dataset", bad)]
    if source.revision is not None and revision_problem(source.revision):
        return [("revision", revision_problem(source.revision))]
    if source.data_files is not None and data_files_problem(source.data_files):
        return [("data_files", data_files_problem(source.data_files))]
    for s in source.splits:
        if split_problem(s):
            problems.append(("split", split_problem(s)))
    sha = resolved_sha(source.dataset, source.revision)
    if sha is None or source.data_files is not None or problems:
        return problems
    configs, default = card_configs(snapshot(source.dataset, sha))
    if not configs:
        return problems
    name = source.config or default
    where = f"{source.dataset}@{sha[:12]}"
    if source.config is not None and source.config not in configs:
        return [("config", f"{where} has no config '{source.config}'{_did_you_mean(source.config, configs)}")]
    if name is None:
        return [("config", f"{where} has several configs and none is the default: choose one with `config:` "
                           f"({', '.join(sorted(configs))})")]
    splits = configs.get(name)
    for s in source.splits:
        if splits is not None and s not in splits:
            problems.append(("split", f"{where} (config {name}) has no split '{s}'{_did_you_mean(s, splits)}"))
    return problems


def _did_you_mean(word: str, options) -> str:
    options = sorted(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f"; it has: {', '.join(options)}"


def revision_notes(sources) -> list[str]:
    """A warning for each hub source that follows a branch instead of a pinned sha."""
    notes = []
    for name, s in sources.items():
        if s.dataset is None or (s.revision and SHA.fullmatch(s.revision)):
            continue
        sha = resolved_sha(s.dataset, s.revision)
        rev = s.revision or "main"
        now = f"resolves to {sha}" if sha else "is not resolved yet (`recipe run` resolves it)"
        notes.append(f"sources.{name}: {s.dataset}@{rev} {now} and follows the branch; pin it with "
                     f"--set sources.{name}.revision={sha or '<sha>'}")
    return notes


# --- run time: resolve against the hub, then read rows --------------------------------------------

def refresh(sources, log: Callable[[str], None]) -> None:
    """Before a run is fingerprinted: record in the cache (refs/<revision>, as huggingface_hub does)
    which sha each hub source's branch or tag names now, so the load step's fingerprint follows a
    dataset that moved. One request per source and no retries; the network being down is not an
    error here (the cache answers, and the load step says what is missing)."""
    todo = [s for s in sources.values() if s.dataset is not None and not (s.revision and SHA.fullmatch(s.revision))]
    if not todo or offline():
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    api = HfApi()
    for s in todo:
        rev = s.revision or "main"
        try:
            sha = api.dataset_info(s.dataset, revision=rev, timeout=10).sha
        except HfHubHTTPError as e:
            raise RecipeError(_hub_error(s.dataset, rev, e)) from None
        except Exception as e:   # httpx connection and timeout errors: offline, the cache decides
            log(f"{s.dataset}: the hub is not reachable ({type(e).__name__}); using the local cache")
            return
        if sha and SHA.fullmatch(sha) and not revision_problem(rev):   # validated; a written path stays inside
            ref = _repo(s.dataset) / "refs" / rev
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(sha, encoding="utf-8")


def _hub_error(dataset_id: str, rev: str, e: Exception) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    if isinstance(e, RevisionNotFoundError):
        return f"dataset {dataset_id}: no revision '{rev}' on the hub"
    if isinstance(e, GatedRepoError):
        return (f"dataset {dataset_id} is gated: accept its terms on https://huggingface.co/datasets/{dataset_id} "
                "and log in (`hf auth login` or HF_TOKEN)")
    if isinstance(e, RepositoryNotFoundError):
        return (f"dataset {dataset_id} does not exist on the hub or is private (log in with `hf auth login` or "
                "set HF_TOKEN for a private dataset)")
    return f"dataset {dataset_id}@{rev}: the hub answered {_one_line(e)}"


def origin(source) -> dict[str, Any]:
    """What the load step read, for the manifest and the report."""
    return {"dataset": source.dataset, "config": source.config, "splits": list(source.splits),
            "revision": source.revision, "sha": resolved_sha(source.dataset, source.revision)}


def iter_dataset(name: str, source, seed: int) -> Iterator:
    """(label, row number, row) of a hub source's rows (rows() makes them readers.Raw rows), each labelled
    `hub:<id>@<sha12>/<config>/<split>` with its row number, `limit` and `shuffle` applied."""
    left = source.limit
    for label, part in _open(name, source, _sha(name, source), seed):
        for row, obj in enumerate(part, 1):
            if left is not None and left <= 0:
                return
            yield label, row, obj   # rows() makes it a readers.Raw row
            left = None if left is None else left - 1


def shards(name: str, source, base_dir: Path, seed: int) -> list[tuple[Path, int, tuple]] | None:
    """The source's rows as slices of its prepared splits' arrow files, for load tasks to read where they run
    (hub_arrow.slices); None for a split streamed, shuffled or cut by `limit`: rows() reads those here."""
    if source.streaming or source.shuffle is not None or source.limit is not None:
        return None
    return hub_arrow.slices(_open(name, source, _sha(name, source), seed))


def _sha(name: str, source) -> str:
    sha = resolved_sha(source.dataset, source.revision)
    if sha is None:
        why = "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set" if offline() else "the hub was not reachable"
        raise RecipeError(f"sources.{name}: dataset {source.dataset}@{source.revision or 'main'} is not in the "
                          f"local cache ({cache_root()}) and {why}; {prefetch_hint(source.dataset, source.revision)}")
    return sha


def _open(name: str, source, sha: str, seed: int) -> list[tuple[str, Any]]:
    """(label, rows) per split, read by `datasets`: from the cached snapshot of `sha` when it holds
    them, else from the hub at exactly `sha`."""
    import datasets
    datasets.disable_progress_bars()   # the run log shows our step lines

    snap = snapshot(source.dataset, sha)
    kwargs: dict[str, Any] = {"name": source.config, "streaming": source.streaming}
    if source.data_files is not None and data_files_problem(source.data_files):   # validation refused it
        raise RecipeError(f"sources.{name}.data_files: {data_files_problem(source.data_files)}")
    if source.data_files is not None:
        kwargs["data_files"] = _plain(source.data_files)
    splits = list(source.splits)
    parts, held = None, "they are not in the local cache"
    if snap.is_dir() and any(snap.iterdir()):
        try:
            parts = [datasets.load_dataset(str(snap), split=s, **kwargs) for s in splits]
        except Exception as e:   # a snapshot that lacks files of this config or split, in many types
            # (datasets also checks a prepared split's rows against the card: a half-downloaded split fails)
            held = f"datasets could not read them from the cached snapshot ({_one_line(e)})"
    if parts is None:
        if offline() or not _reachable(source.dataset, sha):
            raise RecipeError(f"sources.{name}: {source.dataset}@{sha[:12]} config {source.config or 'default'} "
                              f"split {'+'.join(splits)}: {held}, and the hub is not reachable; "
                              f"{prefetch_hint(source.dataset, sha)}")
        try:
            parts = [datasets.load_dataset(source.dataset, split=s, revision=sha, **kwargs) for s in splits]
        except Exception as e:   # the hub's and datasets' errors, many types: one line each
            raise RecipeError(f"sources.{name}: datasets could not read {source.dataset}@{sha[:12]}: "
                              f"{_one_line(e)}") from None
    tag = f"hub:{source.dataset}@{sha[:12]}/{source.config or 'default'}"
    return [(f"{tag}/{s}", _sample(p, source, seed)) for s, p in zip(splits, parts)]


def _sample(part, source, seed: int):
    """A deterministic cap: with `shuffle`, rows in an order seeded by the recipe (a shuffle buffer on a
    stream, a full permutation of a prepared split); `limit` then takes the first ones."""
    if source.shuffle is not None:
        part = part.shuffle(seed=seed, buffer_size=source.shuffle) if source.streaming else part.shuffle(seed=seed)
    if source.limit is not None:
        part = part.take(source.limit) if source.streaming else part.select(range(min(source.limit, len(part))))
    return part


def _reachable(dataset_id: str, sha: str) -> bool:
    """One request, no retries: datasets' own client retries for ~25 s when there is no network."""
    try:
        from huggingface_hub import HfApi
        HfApi().dataset_info(dataset_id, revision=sha, timeout=10)
        return True
    except Exception:   # any failure means it cannot be downloaded now; the caller says what to do
        return False


def _plain(v):
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        return list(v)
    return {k: _plain(x) for k, x in v.items()}


def _one_line(e: BaseException | None) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
