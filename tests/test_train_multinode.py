"""Training past one node, on this machine: two `recipe run --nnodes 2` on 127.0.0.1 as nodes 0 and 1 (gloo,
one shared cache) train what one node with the same 2 processes trains, byte for byte, and only node 0 runs
steps; the nodes' flags and the DeepSpeed hostfile are checked before anything runs."""
import io
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
from helpers import train as F
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import RecipeError
from runner.train import nodes as N
from runner.train.distributed import free_port
from runner.train.launch import check, command, hostfile_slots

STAGE = "stages:\n  first: {mix: {a: 1.0}}\n"
SETS = ["train.max_steps=2"]
ARGS = [*(x for s in SETS for x in ("--set", s)), "--only", "train.first", "--launcher", "torchrun", "--num-procs", "2"]


def _run(recipe, **kw):
    """`recipe run` (this process) of ARGS."""
    from rich.console import Console

    out = io.StringIO()
    run = F.api.run(recipe, SETS, only="train.first", launcher="torchrun", num_procs=2,
                    console=Console(file=out, width=300), **kw)
    return run, out.getvalue()


@F.cuda_procs(2)
def test_two_nodes_train_what_one_node_does(tmp_path, monkeypatch):
    # the same threads per process in both runs: a different OMP split may change the float arithmetic
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(F.RECIPE.format(data=F.REPO / "data", extra=STAGE))
    endpoint = f"127.0.0.1:{free_port()}"
    flags = [*ARGS, "--nnodes", "2", "--rdzv-endpoint", endpoint, "--cache-dir", str(tmp_path / "shared")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(F.REPO), os.environ.get("PYTHONPATH", "")])}
    # node 1: the CLI in a process of its own, in a folder where it would leave a run directory if it made one
    (tmp_path / "node1").mkdir()
    node1 = subprocess.Popen([sys.executable, "-m", "runner", "run", str(recipe), *flags, "--node-rank", "1"],
                             cwd=tmp_path / "node1", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        two, shown = _run(recipe, cache_dir=str(tmp_path / "shared"), output=str(tmp_path / "two"),
                          nnodes=2, node_rank=0, rdzv_endpoint=endpoint)
        said, _ = node1.communicate(timeout=300)
    finally:
        node1.kill()
    assert node1.returncode == 0, said
    assert "--nnodes=2 --node-rank=0 --nproc-per-node=1" in shown
    assert "--nnodes=2 --node-rank=1 --nproc-per-node=1" in said and "trained its share" in said
    # the data steps ran once, on node 0; node 1 ran no step and wrote no run directory
    assert {r.name: r.status for r in two.records} == {n: "ran" for n in
                                                        ("load.a", "load.b", "split", "mix.first", "render.first",
                                                         "train.first")}
    assert "✓" not in said and "render" not in said and not (tmp_path / "node1" / "runs").exists()
    assert not list((tmp_path / "shared" / "nodes").iterdir())   # the probe is gone with the run

    # one node with 2 processes, from a copy of the cache less the trained stage (the data steps are those bytes)
    trained = two.records[-1].fingerprint
    shutil.copytree(tmp_path / "shared", tmp_path / "alone", ignore=lambda d, names: [n for n in names if n == trained])
    one, _ = _run(recipe, cache_dir=str(tmp_path / "alone"), output=str(tmp_path / "one"))
    assert [r.status for r in one.records] == ["cached"] * 5 + ["ran"]
    hist = {name: run.records[-1].stats["history"] for name, run in (("one", one), ("two", two))}
    assert len(hist["one"]) == 2 and hist["two"] == hist["one"]
    final = "first/final/adapter_model.safetensors"
    assert (tmp_path / "two" / final).read_bytes() == (tmp_path / "one" / final).read_bytes()


def test_the_nodes_flags_are_checked_first():
    with pytest.raises(RecipeError, match="--nnodes 2 needs --rdzv-endpoint HOST:PORT"):
        check("torchrun", 2, None, N.Nodes(2, 0))
    with pytest.raises(RecipeError, match="--node-rank 2: with --nnodes 2 it must be 0 to 1"):
        check("torchrun", 2, None, N.Nodes(2, 2, "h:1"))
    with pytest.raises(RecipeError, match="--num-procs 3 counts the processes of the whole run"):
        check("torchrun", 3, None, N.Nodes(2, 0, "h:1"))
    with pytest.raises(RecipeError, match="write it as HOST:PORT"):
        check("torchrun", 2, None, N.Nodes(2, 0, "h"))
    with pytest.raises(RecipeError, match="through --hostfile"):
        check("deepspeed", 2, None, N.Nodes(2, 0, "h:1"))
    with pytest.raises(RecipeError, match="are for --launcher torchrun"):
        check("none", None, None, N.Nodes(1, 0, "h:1"))
    check("torchrun", 4, None, N.Nodes(2, 1, "[::1]:29400"))


def test_cli_says_a_bad_node_flag_in_one_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(F.RECIPE.format(data=F.REPO / "data", extra=STAGE))
    done = subprocess.run([sys.executable, "-m", "runner", "run", str(recipe), "--launcher", "torchrun",
                           "--num-procs", "2", "--nnodes", "2", "--node-rank", "1"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(F.REPO)})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--nnodes 2 needs --rdzv-endpoint HOST:PORT" in done.stderr.strip().splitlines()[-1]


def test_multinode_commands(tmp_path):
    spec = tmp_path / "spec.json"
    node1 = command(spec, launcher="torchrun", num_procs=4, nodes=N.Nodes(2, 1, "10.0.0.1:29400"),
                    master_addr="10.0.0.1", master_port=29555)
    assert node1 == [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--node-rank=1",
                     "--nproc-per-node=2", "--master-addr=10.0.0.1", "--master-port=29555", "-m",
                     "runner.train.worker", str(spec)]
    hosts = tmp_path / "hosts"
    hosts.write_text("# two nodes\nworker-0 slots=2\n\nworker-1  slots=2 # the second\n")
    ds = command(spec, launcher="deepspeed", num_procs=4, hostfile=hosts, master_port=29555)
    assert ds == [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hosts), "--master_port",
                  "29555", "--module", "runner.train.worker", str(spec)]
    with pytest.raises(RecipeError, match=r"one process per slot, 4 in all \(worker-0 slots=2, worker-1 slots=2\), "
                                          r"but --num-procs is 2"):
        command(spec, launcher="deepspeed", num_procs=2, hostfile=hosts)
    with pytest.raises(RecipeError, match="cannot read it"):   # DeepSpeed itself would train on this node alone
        check("deepspeed", 2, tmp_path / "missing", N.Nodes())


_LINE = st.one_of(
    st.tuples(st.sampled_from(["worker-0", "worker-1", "10.0.0.7", "node_a"]), st.integers(0, 16),
              st.sampled_from([" ", "\t", "  "]), st.sampled_from(["", " # note", "  extra"]))
    .map(lambda t: f"{t[0]}{t[2]}slots={t[1]}{t[3]}"),
    st.sampled_from(["", "   ", "# a comment", "worker-2", "worker-3 slots=x", "slots=2", " worker-4 slots=1"]))


@settings(max_examples=80, deadline=None)
@given(st.lists(_LINE, max_size=6))
def test_hostfile_is_read_as_deepspeed_reads_it(tmp_path_factory, lines):
    from deepspeed.launcher.runner import _parse_hostfile

    path = tmp_path_factory.mktemp("h") / "hostfile"
    path.write_text("\n".join(lines) + "\n")
    try:
        theirs = dict(_parse_hostfile(path.read_text().splitlines(keepends=True)))
    except ValueError:
        theirs = None
    try:
        mine = hostfile_slots(path)
    except RecipeError as e:
        assert theirs is None and "\n" not in str(e)
    else:
        assert mine == theirs


def _lead_and_follow(tmp_path, mine: dict, follower_cache):
    """Node 0's Leader announcing one launch while node 1's follow() joins (no training: its differences
    stop it at the join)."""
    nodes = N.Nodes(2, 0, f"127.0.0.1:{free_port()}")
    hello = {"recipe": "r", "num_procs": 2, "nnodes": 2}
    lead = N.Leader(nodes, hello, tmp_path / "cache", log=lambda _: None)
    failed = []

    def node1():
        try:
            N.follow(N.Nodes(2, 1, nodes.rdzv_endpoint), {**hello, **mine}, follower_cache, train=failed.append,
                     log=lambda _: None)
        except RecipeError as e:
            failed.append(str(e))

    t = threading.Thread(target=node1)
    t.start()
    (tmp_path / "spec.json").write_text(json.dumps({"spec": {}}))
    with pytest.raises(RecipeError) as e:
        lead.announce(tmp_path / "spec.json", free_port())
    t.join(60)
    lead.end(str(e.value))
    return str(e.value), failed


def test_a_node_of_another_recipe_or_cache_is_refused(tmp_path):
    said, failed = _lead_and_follow(tmp_path, {"recipe": "other"}, tmp_path / "cache")
    assert said.startswith("node 1 could not join: its recipe (after --set) differs from node 0's")
    assert failed and failed[0].startswith("node 1: its recipe (after --set) differs")
    said, failed = _lead_and_follow(tmp_path, {}, tmp_path / "elsewhere")
    assert "not shared with it; every node needs --cache-dir on a filesystem" in said


def _follower(endpoint, cache, got: list, failed: list) -> threading.Thread:
    hello = {"recipe": "r", "num_procs": 2, "nnodes": 2}

    def node1():
        try:
            got.append(N.follow(N.Nodes(2, 1, endpoint), hello, cache, train=got.append, log=lambda _: None))
        except RecipeError as e:
            failed.append(str(e))
    t = threading.Thread(target=node1)
    t.start()
    return t


def test_a_node_follows_each_launch_until_node_0_ends(tmp_path):
    """The tickets node 1 trains from (node 0's spec text, the rendezvous port), then node 0's end: a failure
    there is node 1's one line too; node 0 gone without an end is one line as well."""
    for end in ("", "train.first: out of memory"):
        nodes = N.Nodes(2, 0, f"127.0.0.1:{free_port()}")
        lead = N.Leader(nodes, {"recipe": "r", "num_procs": 2, "nnodes": 2}, tmp_path / "cache", log=lambda _: None)
        got, failed = [], []
        t = _follower(nodes.rdzv_endpoint, tmp_path / "cache", got, failed)
        (tmp_path / "spec.json").write_text('{"spec": {"stage": "first"}}')
        lead.announce(tmp_path / "spec.json", 4321)
        lead.announce(tmp_path / "spec.json", 4322)
        lead.end(end)
        t.join(60)
        assert [g["port"] for g in got[:2]] == [4321, 4322]
        assert got[0] == {"spec": '{"spec": {"stage": "first"}}', "spec_name": "spec.json", "addr": "127.0.0.1",
                          "port": 4321}
        assert (got[2:], failed) == (([2], []) if not end else
                                     ([], ["node 1: node 0's run failed: train.first: out of memory"]))
    nodes = N.Nodes(2, 0, f"127.0.0.1:{free_port()}")
    lead = N.Leader(nodes, {"recipe": "r", "num_procs": 2, "nnodes": 2}, tmp_path / "cache", log=lambda _: None)
    got, failed = [], []
    t = _follower(nodes.rdzv_endpoint, tmp_path / "cache", got, failed)
    lead.announce(tmp_path / "spec.json", 4321)   # after node 1 joined
    del lead   # node 0's process ends without a word
    t.join(60)
    assert failed == ["node 0's next training step: node 0's `recipe run` went away (it failed or was stopped; "
                      "see its output)"]
