"""A real Ray cluster: a head (`ray start --head`, 1 CPU) and a second node joining it (`ray start --address`,
1 CPU and a resource of its own), both on 127.0.0.1 with a temp dir of the test's own. The synthetic poetry
recipe's dry run with --ray-address runs tasks on both nodes and writes the local executor's bytes; an address
where no cluster answers is one line. Every process the cluster started is killed by its id when the test
ends, passed or failed, and the test checks that none is left."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers.ray import restore_registry, runtime_processes, stop

ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
psutil = pytest.importorskip("psutil")   # comes with ray

from runner.cli import main  # noqa: E402
from test_executor_ray import ROWS  # noqa: E402
from test_executors import _artifacts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from data_scale import RECIPE, write_poems  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_registry = pytest.fixture(scope="module", autouse=True)(restore_registry)


@pytest.fixture
def cluster():
    """HOST:PORT of a two-node cluster, stopped (its processes killed by id) whatever the test does."""
    # A local runtime an earlier test of this process started: gone first (two runtimes on this machine at once
    # is not what a user has); what it left in the environment, runner.executors.ray._init takes back.
    ray.shutdown()
    _, alive = psutil.wait_procs(psutil.Process().children(recursive=True), timeout=30)
    for p in alive:
        p.kill()
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")   # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    # Ray 2.60's `ray start --head` turns token authentication on, which a driver reads when it imports ray:
    # off for this cluster on 127.0.0.1, so this process (ray imported long ago) can join it (docs/ray.md: on)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        for args in (["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp_dir],
                     ["--address", f"127.0.0.1:{port}", "--resources", '{"node2": 1}']):
            p = subprocess.run([RAY, "start", *args, *common], capture_output=True, text=True, env=env, timeout=120)
            assert p.returncode == 0, f"ray start {' '.join(args)}: {p.stderr[-2000:]}"
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        stop(temp_dir)
        left = [p.pid for p in runtime_processes(temp_dir)]
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"cluster processes left running: {left}"


# The driver as a user runs it: a process of its own, which says where the tasks ran.
DRIVER = """
import json, sys
import ray
from runner.cli import main
from runner.executors import ray as on_ray
rc = main(sys.argv[1:])
nodes = {n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
print("RESULT " + json.dumps({"rc": rc, "used": sorted({n for _, n in on_ray.PLACED}), "nodes": nodes}))
"""


def test_a_two_node_cluster_runs_the_recipe_on_both_nodes_with_local_bytes(tmp_path, cluster, monkeypatch):
    write_poems(tmp_path / "poems.jsonl", ROWS)
    (tmp_path / "r.yaml").write_text(RECIPE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    args = ["run", "r.yaml", "--dry-run"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, "-c", DRIVER, *args, "--cache-dir", "ray", "--output", "run-ray",
                        "--executor", "ray", "--ray-address", cluster], capture_output=True, text=True, env=env,
                       timeout=600)
    assert "RESULT " in p.stdout, p.stderr[-3000:]
    out = json.loads(p.stdout.split("RESULT ", 1)[1])
    assert out["rc"] == 0, p.stderr[-3000:]
    assert len(out["nodes"]) == 2 and sum("node2" in r for r in out["nodes"].values()) == 1, out["nodes"]
    assert out["used"] == sorted(out["nodes"]), f"tasks ran on {len(out['used'])} of the cluster's 2 nodes"
    assert main([*args, "--cache-dir", "local", "--output", "run-local"]) == 0
    assert _artifacts(tmp_path / "ray") == _artifacts(tmp_path / "local")


def test_an_address_where_no_cluster_answers_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    ray.shutdown()
    port = _free_port()
    t0 = time.monotonic()
    rc = main(["run", str(REPO / "recipes" / "tiny_chat.yaml"), "--dry-run", "--cache-dir", "c",
               "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "no Ray cluster answers there" in err, err
    assert not (tmp_path / "c").exists()
    assert time.monotonic() - t0 < 120
    # --ray-address is for that run only: it once stayed in this process's environment, and a later test's
    # Ray run (the bench's smoke) tried to join the address where nothing answers
    assert "RAY_ADDRESS" not in os.environ
