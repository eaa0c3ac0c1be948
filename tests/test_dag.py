"""The DAG: golden plans, cache hits and misses for each kind of change, atomic artifacts under kill -9,
step selection (--only/--from/--force) and the report's stable keys. Data steps only (fast)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import api
from runner.errors import RecipeError

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "plan"
SHIPPED = ["poetry_lora", "curriculum_3stage", "fomaml_poets", "fomaml_explicit", "stage2_correction", "verse_rules"]

SMALL = """\
recipe: small
model: {base: builtin:tiny}
sources:
  en: {path: data/alpaca_en_demo.json, format: alpaca}
  ident: {path: data/identity.json, format: alpaca}
filters:
  - {kind: length, field: assistant, min_chars: 5, max_chars: 2000, max_tokens: max_length}
  - {kind: dedup, method: exact}
mix: {en: 0.8, ident: 0.2}
size: 200
template: {max_length: 128}
train: {max_steps: 2, micro_batch_size: 2, batch_size: 4}
evaluate: {max_rows: 8, generate: {prompts: ["Who are you?"], max_new_tokens: 8}}
"""


@pytest.fixture
def small(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    for f in ("alpaca_en_demo.json", "identity.json"):
        shutil.copy(ROOT / "data" / f, tmp_path / "data" / f)
    (tmp_path / "small.yaml").write_text(SMALL)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "small.yaml"


def statuses(path, *overrides) -> dict[str, str]:
    _, steps, _ = api.plan(path, overrides)
    return {s.name: s.status for s in steps}


def ran(records) -> set[str]:
    return {r.name for r in records if r.status == "ran"}


@pytest.mark.parametrize("name", SHIPPED)
def test_golden_plan(name, tmp_path):
    """The compiled graph of every shipped recipe (names, kinds, edges, notes) is reviewed in git."""
    graph, steps, _ = api.plan(ROOT / "recipes" / f"{name}.yaml", cache_dir=str(tmp_path))
    got = {"steps": [{"name": s.name, "kind": s.kind, "stage": s.stage, "status": s.status,
                      "depends_on": s.depends_on} for s in steps], "notes": list(graph.notes)}
    path = GOLDEN / f"{name}.json"
    if os.environ.get("REGEN_GOLDEN"):
        path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
    assert got == json.loads(path.read_text())


def test_plan_is_pure_and_json_shape(small):
    a = subprocess.run([sys.executable, "-m", "runner", "plan", str(small), "--format", "json"], capture_output=True,
                       text=True, check=True).stdout
    b = subprocess.run([sys.executable, "-m", "runner", "plan", str(small), "--format", "json"], capture_output=True,
                       text=True, check=True).stdout
    assert a == b
    doc = json.loads(a)
    for s in doc["steps"]:
        assert {"name", "kind", "stage", "status", "why", "depends_on"} <= set(s)
        assert s["status"] == "new"
    mermaid = subprocess.run([sys.executable, "-m", "runner", "plan", str(small), "--format", "mermaid"],
                             capture_output=True, text=True, check=True).stdout
    assert mermaid.startswith("graph TD") and "load_en --> filter_en" in mermaid


def test_cache_hits_and_misses_for_each_kind_of_change(small):
    api.run(small, dry_run=True)
    data = ["load.en", "load.ident", "filter.en", "filter.ident", "dedup", "split", "mix.main", "render.main"]
    assert all(statuses(small)[s] == "cached" for s in data)
    # a filter parameter: that filter step and everything downstream of it, nothing upstream
    st = statuses(small, "filters[0].max_chars=1500")
    assert st["load.en"] == st["load.ident"] == "cached"
    assert all(st[s] == "stale" for s in ["filter.en", "filter.ident", "dedup", "split", "mix.main", "render.main"])
    _, steps, _ = api.plan(small, ("filters[0].max_chars=1500",))
    why = {s.name: s.why for s in steps}
    assert "param filters[length].max_chars: 2000 → 1500" in why["filter.en"]
    assert why["dedup"] == ["upstream filter.en changed", "upstream filter.ident changed"]
    # how labels are made: only render (and training after it); the token-length filter is unaffected
    st = statuses(small, "template.train_on=last")
    assert st["filter.en"] == st["mix.main"] == "cached" and st["render.main"] == "stale" and st["train.main"] == "new"
    # the cutoff: the filter that drops rows longer than max_length too
    st = statuses(small, "template.max_length=96")
    assert st["load.en"] == "cached" and st["filter.en"] == "stale"
    # the mix: mix and after, not the data before it
    st = statuses(small, "mix.en=0.7", "mix.ident=0.3")
    assert st["split"] == "cached" and st["mix.main"] == "stale"
    # one byte of one file: that source's load and everything downstream of it
    f = small.parent / "data" / "identity.json"
    f.write_bytes(f.read_bytes().replace(b"Hello", b"Hallo", 1))
    _, steps, _ = api.plan(small)
    st = {s.name: s for s in steps}
    assert st["load.en"].status == "cached" and st["load.ident"].status == "stale"
    assert "file data/identity.json changed" in st["load.ident"].why
    assert st["filter.en"].status == "cached" and st["dedup"].status == "stale"


def test_changing_one_filter_recomputes_only_it_and_its_descendants(small):
    api.run(small, dry_run=True)
    _, _, records, _ = api.run(small, ["filters[0].max_chars=1500"], dry_run=True)
    assert ran(records) == {"filter.en", "filter.ident", "dedup", "split", "mix.main", "render.main"}
    _, _, records, _ = api.run(small, ["filters[0].max_chars=1500"], dry_run=True)
    assert ran(records) == set()


def test_selection_only_from_force(small):
    _, _, records, _ = api.run(small, only="split", dry_run=True)
    assert ran(records) == {"load.en", "load.ident", "filter.en", "filter.ident", "dedup", "split"}
    _, _, records, _ = api.run(small, only="split", dry_run=True)
    assert ran(records) == set()
    _, _, records, _ = api.run(small, only="split", force=True, dry_run=True)
    assert ran(records) == {"split"}
    _, _, records, _ = api.run(small, from_step="dedup", dry_run=True)
    assert ran(records) == {"dedup", "split", "mix.main", "render.main"}
    _, _, records, _ = api.run(small, force=True, dry_run=True)
    assert len(ran(records)) == 8
    with pytest.raises(RecipeError, match="no step named 'dedupe' \\(did you mean 'dedup'\\?\\)"):
        api.run(small, only="dedupe", dry_run=True)


def test_a_killed_step_never_leaves_an_artifact_that_is_trusted(small):
    # execute.before_commit is the seam: this process dies by SIGKILL after dedup wrote its files
    kill = ("import os, signal, sys; from runner.dag import execute; "
            "execute.before_commit = lambda step: step.name == 'dedup' and os.kill(os.getpid(), signal.SIGKILL); "
            "from runner.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", kill, "run", str(small), "--dry-run"], capture_output=True, text=True)
    assert p.returncode == -9
    cache = small.parent / ".recipe" / "cache"
    assert list((cache / "tmp").iterdir()), "the killed step's files were written to tmp"
    st = statuses(small)
    assert st["filter.en"] == "cached" and st["dedup"] == "new"
    _, _, records, _ = api.run(small, dry_run=True)
    assert "dedup" in ran(records) and "filter.en" not in ran(records)
    assert not list((cache / "tmp").iterdir()), "tmp left by the dead process is cleaned up"
    manifest = json.loads(next((cache / "objects").glob("*/manifest.json")).read_text())
    assert {"step", "fingerprint", "components", "stats"} <= set(manifest)


@pytest.mark.parametrize("where", ["writing the step's files", "writing its manifest"])
def test_a_full_disk_is_one_line_and_nothing_half_committed(small, monkeypatch, capsys, where):
    """ENOSPC while a step writes (its files, or the manifest that commits it): one line, exit 1, no
    artifact of that step and no temporary folder left; the same command then goes on from there."""
    import errno

    from runner.cli import main
    from runner.dag import cache as cache_mod, execute

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device", "somefile")
    if where == "writing the step's files":
        monkeypatch.setattr(execute, "before_commit", lambda step: step.name == "dedup" and full())
    else:
        real = cache_mod.Cache.commit
        monkeypatch.setattr(cache_mod.Cache, "commit", lambda self, tmp, fp, m: full() if m["step"] == "dedup"
                            else real(self, tmp, fp, m))
    assert main(["run", str(small), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "Traceback" not in err and "rerun the same command" in err
    cache = small.parent / ".recipe" / "cache"
    assert not list((cache / "tmp").iterdir())
    st = statuses(small)
    assert st["filter.en"] == "cached" and st["dedup"] == "new"
    monkeypatch.undo()
    _, _, records, _ = api.run(small, dry_run=True)
    assert "dedup" in ran(records) and "filter.en" not in ran(records)


def test_one_run_at_a_time_trains_a_step(tmp_path):
    """A second run of the same training step, while the first holds it, is refused with one line (it would
    have resumed from the first's checkpoints); once the first is done the lock is free again."""
    from runner.dag.cache import Cache
    from runner.dag.execute import _exclusive
    from runner.errors import StepError
    cache = Cache(tmp_path / "cache")
    with _exclusive(cache, "abc123", "train.main"):
        with pytest.raises(StepError, match="another run is training this very step right now"):
            with _exclusive(cache, "abc123", "train.main"):
                pass
        with _exclusive(cache, "other", "train.task"):   # another step trains meanwhile
            pass
    with _exclusive(cache, "abc123", "train.main"):
        pass


def test_report_has_the_documented_keys(small):
    _, _, records, run_dir = api.run(small, dry_run=True)
    report = json.loads((run_dir / "report.json").read_text())
    for s in report["steps"]:
        assert {"name", "kind", "stage", "status", "fingerprint", "seconds", "rows_in", "rows_out", "dropped",
                "by_source"} <= set(s)
        assert s["status"] in ("cached", "ran", "failed")
        if s["rows_in"] is not None:
            assert s["rows_in"] == s["rows_out"] + sum(s["dropped"].values())
    (stage,) = report["stages"]
    assert set(stage["mix"]) == {"requested", "achieved"} and stage["mix"]["requested"] == {"en": 0.8, "ident": 0.2}
    assert abs(stage["mix"]["achieved"]["en"] - 0.8) < 0.01 and stage["rows"]["train"] == 200
    assert set(report["quarantine"]) == {"en", "ident"}
    assert (run_dir / "report.md").read_text().startswith("# Run report: small")


def test_same_recipe_and_seed_give_byte_identical_artifacts(small, tmp_path):
    _, _, a, _ = api.run(small, dry_run=True, cache_dir=str(tmp_path / "c1"))
    _, _, b, _ = api.run(small, dry_run=True, cache_dir=str(tmp_path / "c2"))
    for x, y in zip(a, b):
        assert x.fingerprint == y.fingerprint
        fa = sorted(p for p in Path(x.artifact).rglob("*") if p.is_file() and p.name != "manifest.json")
        fb = sorted(p for p in Path(y.artifact).rglob("*") if p.is_file() and p.name != "manifest.json")
        assert [p.read_bytes() for p in fa] == [p.read_bytes() for p in fb], x.name


def test_cache_location_default_env_and_flag(small, tmp_path, monkeypatch):
    _, _, cache = api.plan(small)
    assert cache.root == small.parent / ".recipe" / "cache"
    monkeypatch.setenv("RECIPE_CACHE_DIR", str(tmp_path / "env_cache"))
    assert api.plan(small)[2].root == tmp_path / "env_cache"
    assert api.plan(small, cache_dir=str(tmp_path / "flag"))[2].root == tmp_path / "flag"   # the flag wins
    api.run(small, only="load.en", dry_run=True)
    assert list((tmp_path / "env_cache" / "objects").iterdir())


def test_resume_guard_only_protects_saved_progress(tmp_path):
    from runner.dag.cache import Cache
    from runner.errors import StepError
    from runner.dag.execute import _guard_resume
    from runner.dag.fingerprint import Fingerprint
    cache = Cache(tmp_path)
    old = Fingerprint("old", {"kind": "train", "version": 1, "params": {"train": {"epochs": 1}}, "inputs": {}, "files": {}})
    new = Fingerprint("new", {"kind": "train", "version": 1, "params": {"train": {"epochs": 2}}, "inputs": {}, "files": {}})
    cache.remember("r", "train.main", old, suffix=".partial")
    (cache.partial_dir("old") / "checkpoints").mkdir(parents=True)
    _guard_resume(cache, "r", "train.main", new, force=False)     # crashed before its first checkpoint: nothing to keep
    assert not cache.partial_dir("old").exists()
    (cache.partial_dir("old") / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(StepError, match=r"param train.epochs: 1 → 2.*--force"):
        _guard_resume(cache, "r", "train.main", new, force=False)
    _guard_resume(cache, "r", "train.main", new, force=True)
    assert not cache.partial_dir("old").exists()


def test_a_missing_logger_is_one_clear_error_for_every_training_kind(monkeypatch, tmp_path):
    """The engine checks the loggers of every step kind that trains (a meta recipe's train.meta too)."""
    import importlib.util

    from runner.dag.execute import _training
    from runner.steps import STEPS
    from runner.steps.base import Step, StepId
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    trains = [k for k, m in STEPS.items() if m.KIND.trains]
    assert {"train", "meta_train"} <= set(trains)
    for kind in trains:
        step = Step(StepId(kind, stage="meta"), {}, (), runtime={"report_to": ("wandb",)})
        with pytest.raises(RecipeError, match=r"train.report_to: wandb is not installed; `pip install wandb`"):
            with _training(step, tmp_path):
                pass


def test_fingerprints_cover_what_the_steps_read(tmp_path):
    from runner.dag.compile import compile_recipe
    from runner.dag.fingerprint import fingerprint_graph
    from runner.steps import versions

    def fps(*overrides):
        r = api.load(ROOT / "recipes" / "curriculum_3stage.yaml", overrides)
        return {k: v.value for k, v in fingerprint_graph(compile_recipe(r), r.file.parent, versions()).items()}
    base = fps()
    # two stages with the same mix still draw differently: the draw is seeded by the stage name
    same = fps("stages.task.mix={general: 1.0}", "stages.base.size=100", "stages.task.size=100")
    assert same["mix.base"] != same["mix.task"]
    # the Fisher a stage leaves behind depends on the next stage's ewc settings
    changed = fps("stages.task.ewc.fisher_samples=8")
    assert changed["train.base"] != base["train.base"] and changed["mix.base"] == base["mix.base"]
    # merging at export and every_stage change neither a trained stage nor an eval's output
    merged = fps("output.merge=true")
    assert merged["train.domain"] == base["train.domain"] and merged["export"] != base["export"]
    assert fps("evaluate.every_stage=false")["eval.domain"] == base["eval.domain"]


def test_run_options_are_checked_before_running(small):
    with pytest.raises(RecipeError, match="--num-procs needs --launcher"):
        api.run(small, num_procs=2)
    with pytest.raises(RecipeError, match="--only and --from cannot be combined"):
        api.run(small, only="split", from_step="dedup")
    with pytest.raises(RecipeError, match="--hostfile is read by the DeepSpeed launcher"):
        api.run(small, hostfile="hosts.txt")
