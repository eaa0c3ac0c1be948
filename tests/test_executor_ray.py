"""The Ray executor (runner/executors/ray.py) on a local Ray runtime: the same artifacts, byte for byte, as the
local executor, under the same fingerprints; a cache filled by one executor reused by the other; a Ray worker
killed in the middle of a step retried with the same bytes; without Ray installed, one line saying how to
install it; and validate/plan/diff/show never import ray. The real two-node cluster: test_executor_cluster_ray.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.ray import restore_registry, runtime_processes, stop, wait_gone

ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")

from runner import api, executors  # noqa: E402
from runner.cli import main  # noqa: E402
from runner.errors import RecipeError  # noqa: E402
from test_executors import _artifacts  # noqa: E402
from test_foundation import LIGHT  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from data_scale import RECIPE, write_poems  # noqa: E402

ROWS = 5000   # the bench's synthetic poetry recipe (every data step kind); docs/ray.md: 100k checked by hand


_registry = pytest.fixture(scope="module", autouse=True)(restore_registry)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray runtime of this test module's own (RAY_ADDRESS=local: never another running cluster)."""
    saved = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = "local"
    try:
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    write_poems(d / "poems.jsonl", ROWS)
    (d / "r.yaml").write_text(RECIPE, encoding="utf-8")
    return d / "r.yaml"


@pytest.fixture(scope="module")
def local_cache(tmp_path_factory, synthetic):
    """The synthetic recipe's dry run on the local executor: the bytes every Ray run must write."""
    cache = tmp_path_factory.mktemp("local") / "cache"
    _run(synthetic, cache, "local")
    return cache


def _run(recipe: Path, cache: Path, executor: str, overrides=()):
    return api.run(recipe, overrides, dry_run=True, cache_dir=str(cache), output=str(cache.parent / f"run-{cache.name}"),
                   executor=executor)


class KillOnce:
    """A batch function that kills its own Ray worker the first time (a marker file says it happened)."""
    def __init__(self, fn, marker: str):
        self.fn, self.marker = fn, marker

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.fn(batch)


def test_ray_writes_the_local_executors_bytes_even_when_a_worker_dies_and_shares_its_cache(
        tmp_path, local_ray, synthetic, local_cache, monkeypatch):
    """One Ray run: every data step kind on Ray, the first dedup task's worker killed (Ray retries it), the
    dedup's group-bys in partitions of 1,000 rows (the local run's are one partition each)."""
    from ray import cloudpickle

    from runner.data import groupby
    from runner.executors import ray as ray_executor
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this test module
    marker = tmp_path / "killed"

    class Killing(ray_executor.RayExecutor):
        def run(self, job):
            return super().run(replace(job, batch=KillOnce(job.batch, str(marker))) if job.name == "dedup" else job)

    monkeypatch.setattr(executors, "_FACTORIES", {**executors._FACTORIES, "killing": Killing})
    monkeypatch.setattr(groupby, "ROWS_PER_PART", 1000)
    ray_executor.PLACED.clear()
    _run(synthetic, tmp_path / "ray", "killing")
    assert marker.exists() and int(marker.read_text()) != os.getpid(), "no worker was killed: nothing was tested"
    on_ray, local = _artifacts(tmp_path / "ray"), _artifacts(local_cache)
    assert sorted(on_ray) == sorted(local), "the executor moved a fingerprint"
    for fp, art in local.items():
        assert on_ray[fp] == art, f"{art['step']}: other bytes or stats on Ray"
    ran = {job.split(" ")[0].split(".")[0] for job, _ in ray_executor.PLACED}
    assert {"filter", "dedup", "split", "render"} <= ran, ran
    tasks = Counter(job for job, _ in ray_executor.PLACED.elements())
    assert tasks["dedup.exact"] >= 2 and tasks["dedup.minhash"] >= 2, tasks    # the group-bys, as Ray tasks
    node = ray.get_runtime_context().get_node_id()
    assert {n for _, n in ray_executor.PLACED} == {node}      # the one local node, not this process's imagination
    # where the work ran is not what the recipe means: each cache serves the other executor
    for cache, other in ((tmp_path / "ray", "local"), (local_cache, "ray")):
        records = _run(synthetic, cache, other).records
        assert {r.status for r in records} == {"cached"}, [(r.id, r.status) for r in records]


def test_a_hub_split_loads_in_shard_tasks_on_ray_with_the_local_bytes(tmp_path, local_ray, monkeypatch):
    """A hub source's prepared split: its arrow files are read by load tasks on Ray (hub_arrow.SHARD_ROWS rows
    each), and the load step writes what the local executor writes."""
    from helpers.hub import recipe as hub_recipe, write_chat
    from runner.executors import ray as ray_executor
    from runner.sources import hub, hub_arrow

    write_chat(tmp_path / "hf" / "hub", n_train=700)
    for k, v in {"HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
                 "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(hub_arrow, "SHARD_ROWS", 64)
    r = hub_recipe(tmp_path, "  chat: {dataset: acme/chat, split: [train_sft, test_sft], format: messages}\n")
    ray_executor.PLACED.clear()
    for executor in ("local", "ray"):
        api.run(r, dry_run=True, only="load.chat", cache_dir=str(tmp_path / executor),
                output=str(tmp_path / f"run-{executor}"), executor=executor)
    assert Counter(job for job, _ in ray_executor.PLACED.elements())["load.chat"] == 12   # 11 + 1 slices
    local, on_ray = _artifacts(tmp_path / "local"), _artifacts(tmp_path / "ray")
    assert sorted(on_ray) == sorted(local) and len(local) == 1
    for fp, art in local.items():
        assert on_ray[fp] == art, "other bytes or stats on Ray"


def test_a_local_runtime_leaves_this_process_environment_as_it_was(local_ray):
    """ray.init leaves variables in os.environ for good (why that matters: runner.executors.ray._init); the
    executor puts the whole environment back."""
    from runner.executors.ray import RayExecutor
    ray.shutdown()
    before = dict(os.environ)
    RayExecutor()
    assert ray.is_initialized() and dict(os.environ) == before


def test_without_ray_installed_the_executor_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)          # `import ray` fails as if it were not installed
    monkeypatch.delitem(sys.modules, "runner.executors.ray", raising=False)
    monkeypatch.setattr(executors, "_FACTORIES", {k: v for k, v in executors._FACTORIES.items() if k != "ray"})
    monkeypatch.chdir(tmp_path)
    rc = main(["run", str(REPO / "recipes" / "tiny_chat.yaml"), "--dry-run", "--cache-dir", str(tmp_path / "c"),
               "--executor", "ray"])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert err.splitlines() == [err] and "pip install -e '.[ray]'" in err and "Traceback" not in err, err
    assert not (tmp_path / "c").exists()


def test_ray_address_needs_the_ray_executor(tmp_path, capsys):
    rc = main(["run", str(REPO / "recipes" / "tiny_chat.yaml"), "--dry-run", "--ray-address", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "--ray-address 127.0.0.1:1: it needs --executor ray" in err and len(err.splitlines()) == 1


def test_validate_plan_diff_show_never_import_ray(tmp_path):
    out = subprocess.run([sys.executable, "-c", LIGHT.replace("{HEAVY}", repr({"ray"})), str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY: []" in out.stdout, out.stdout[-500:]


class KillAlways:
    """A batch function whose worker dies every time: Ray gives up after its retries, as when nodes are gone."""
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, batch):
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_cluster_that_fails_mid_step_is_one_line_and_commits_nothing_of_it(tmp_path, local_ray, synthetic,
                                                                             local_cache, monkeypatch, capsys):
    from ray import cloudpickle

    from runner.executors.ray import RayExecutor
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    class Dying(RayExecutor):
        def run(self, job):
            return super().run(replace(job, batch=KillAlways(job.batch)) if job.name == "dedup" else job)

    monkeypatch.setattr(executors, "_FACTORIES", {**executors._FACTORIES, "dying": Dying})
    cache = tmp_path / "cache"
    rc = main(["run", str(synthetic), "--dry-run", "--cache-dir", str(cache), "--output", str(tmp_path / "run"),
               "--executor", "dying"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "ray: the cluster failed during dedup (WorkerCrashedError" in line and "nothing of this step" in line, line
    steps = {json.loads((d / "manifest.json").read_text())["step"] for d in (cache / "objects").iterdir()}
    assert "dedup" not in steps and {"load.tang", "filter.tang"} <= steps, steps
    assert not any((cache / "tmp").iterdir()) if (cache / "tmp").exists() else True
    # the rerun (here: on the local executor) resumes from what was committed and writes the same bytes
    records = _run(synthetic, cache, "local").records
    status = {r.name: r.status for r in records}
    assert status["load.tang"] == status["filter.tang"] == "cached" and status["dedup"] == "ran", status
    assert _artifacts(cache) == _artifacts(local_cache)


def test_a_node_that_does_not_see_the_cache_is_one_line(tmp_path, local_ray):
    from runner.executors.ray import RayExecutor, check_nodes_see
    RayExecutor()
    check_nodes_see(tmp_path / "seen.jsonl")          # a folder this machine sees: every node of it does
    with pytest.raises(RecipeError, match=r"^ray: node \S+ does not see /nowhere/cache: the cache root"):
        check_nodes_see(Path("/nowhere/cache/objects/0a1b/records.jsonl"))


def test_parquet_row_groups_are_ray_tasks_with_the_bytes_of_one_read(tmp_path, local_ray):
    """A multi-row-group parquet file: one task per row group, and the records, the quarantine entry's row
    number (in a later group) and the stats of one read of the whole file in this process."""
    from runner.executors import ray as ray_executor
    from test_load_job import parquet_source
    load = parquet_source(tmp_path)
    whole = load(limit=10 ** 9)
    ray_executor.PLACED.clear()
    assert load(ray_executor.RayExecutor()) == whole
    assert [q["row"] for q in whole[1]] == [750]
    assert sum(n for (job, _), n in ray_executor.PLACED.items() if job == "load.s") == 10, ray_executor.PLACED


def _mid_step(proc: subprocess.Popen, cache: Path, done: int) -> str:
    """The fingerprint of the step the driver is writing (its folder under the cache's tmp/) once `done`
    steps are committed: a data step on Ray, in the middle."""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        committed = {d.name for d in (cache / "objects").glob("*") if (d / "manifest.json").is_file()}
        writing = [d.name.rsplit(".", 1)[0] for d in (cache / "tmp").glob("*")] if len(committed) >= done else []
        if writing and writing[0] not in committed:
            return writing[0]
        time.sleep(0.01)
    raise AssertionError(f"no step was caught running (driver exit code {proc.poll()})")


def test_the_driver_killed_mid_step_commits_nothing_ends_its_runtime_and_the_rerun_resumes(
        tmp_path, synthetic, local_cache):
    """`recipe run --executor ray` on a local runtime of its own, SIGKILLed while a data step runs: that step
    is not committed, the runtime it started ends with it, and the rerun (Ray again) takes the committed
    steps from the cache and writes the local executor's bytes."""
    temp_dir = tempfile.mkdtemp(prefix="rk", dir="/tmp")   # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RAY_ADDRESS": "local", "RAY_TMPDIR": temp_dir,
           "RAY_USAGE_STATS_ENABLED": "0"}
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "runner", "run", str(synthetic), "--dry-run", "--executor", "ray",
           "--cache-dir", str(cache)]
    try:
        driver = subprocess.Popen([*cmd, "--output", str(tmp_path / "killed")], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # the runtime is found before the step to cut starts: nothing slow between catching it and the kill
            deadline = time.monotonic() + 120
            while not runtime_processes(temp_dir) and driver.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert runtime_processes(temp_dir), "the driver's Ray runtime is not where the test looks"
            running = _mid_step(driver, cache, done=2)
        finally:
            driver.kill()
            driver.wait()
        committed = {d.name: json.loads((d / "manifest.json").read_text())["step"] for d in (cache / "objects").glob("*")
                     if (d / "manifest.json").is_file()}
        assert running not in committed and list((cache / "tmp").glob(f"{running}.*")), "the step was not cut"
        left = wait_gone(temp_dir, 60)
        assert not left, f"the killed driver's Ray runtime is still running: {[p.info['cmdline'][:2] for p in left]}"

        p = subprocess.run([*cmd, "--output", str(tmp_path / "rerun")], env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        status = {s["name"]: s["status"] for s in json.loads((tmp_path / "rerun" / "report.json").read_text())["steps"]}
        assert all(status[step] == "cached" for step in committed.values()), status
        assert _artifacts(cache) == _artifacts(local_cache)
        assert not any((cache / "tmp").iterdir()), "the killed run's half artifact was left behind"
        assert not wait_gone(temp_dir, 60), "the rerun's Ray runtime outlived it"
    finally:
        stop(temp_dir)
        left = runtime_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left running: {[p.pid for p in left]}"


# Every shipped recipe, on Ray and locally: the same files. Two cannot run here, each for a reason the test
# checks, so a recipe cannot leave this list quietly.
NOT_HERE = {"base_lora": "a base to extend: it has no sources", "hub_ultrachat": "reads the Hugging Face Hub"}
SHIPPED = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml") if p.stem not in NOT_HERE)
EXTRA = {"fomaml_explicit": ["template.max_length=256"], "poetry_lora": ["size=2000"]}
WHOLE = {"fomaml_poets"}   # its tasks (one per poet) need every poem
BIG = "tang_poems.jsonl"   # 9.8 MB: 3,000 of its rows are enough to compare (whole-file ranges: the synthetic test)


def _overrides(name: str) -> list[str]:
    sources = api.load(REPO / "recipes" / f"{name}.yaml", ["model.base=builtin:tiny"]).sources
    limits = [] if name in WHOLE else [f"sources.{n}.limit=3000" for n, s in sources.items()
                                       if str(getattr(s, "path", "")).endswith(BIG)]
    return ["model.base=builtin:tiny", *limits, *EXTRA.get(name, [])]


def test_the_recipes_left_out_cannot_run_here():
    import yaml
    base, hub = (yaml.safe_load((REPO / "recipes" / f"{n}.yaml").read_text(encoding="utf-8")) for n in NOT_HERE)
    assert not base.get("sources") and base.get("tasks") is None
    assert any("dataset" in s for s in hub["sources"].values())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_writes_the_same_bytes_on_ray(tmp_path, local_ray, name):
    recipe, overrides = REPO / "recipes" / f"{name}.yaml", _overrides(name)
    for executor in ("local", "ray"):
        _run(recipe, tmp_path / executor, executor, overrides)
    local, on_ray = _artifacts(tmp_path / "local"), _artifacts(tmp_path / "ray")
    assert sorted(on_ray) == sorted(local), "the executor moved a fingerprint"
    for fp, art in local.items():
        assert on_ray[fp] == art, f"{name}: {art['step']}: other bytes or stats on Ray"
