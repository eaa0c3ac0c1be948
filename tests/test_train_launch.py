"""Multi-process training: the launcher commands, and 2 processes (torchrun, gloo on CPU) reaching
the losses of 1 process with the same effective batch."""
import sys

import pytest
from helpers import train as F

from runner.errors import RecipeError
from runner.train.launch import command, launch
from runner.trainers.sft.driver import train as train_stage
from runner.train.worker import write_spec


def test_commands(tmp_path):
    spec = tmp_path / "spec.json"
    torchrun = command(spec, launcher="torchrun", num_procs=4, master_port=29555)
    assert torchrun == [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=4",
                        "--master-addr=127.0.0.1", "--master-port=29555", "-m", "runner.train.worker", str(spec)]
    ds = command(spec, launcher="deepspeed", num_procs=2, master_port=29555)
    assert ds == [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", "29555",
                  "--module", "runner.train.worker", str(spec)]
    (tmp_path / "hosts").write_text("worker-0 slots=1\nworker-1 slots=1\n")
    hosts = command(spec, launcher="deepspeed", num_procs=2, hostfile=tmp_path / "hosts", master_port=1)
    assert hosts[3:5] == ["--hostfile", str(tmp_path / "hosts")]
    with pytest.raises(RecipeError, match="--hostfile is read by the DeepSpeed launcher"):
        command(spec, launcher="torchrun", num_procs=2, hostfile="hosts")


@F.cuda_procs(2)
def test_two_processes_match_one(tmp_path):
    # batch 4: one process accumulates 2 micro-batches of 2, two processes take one each
    data = F.rows(tmp_path / "train.jsonl")
    one = F.recipe(tmp_path, "train.max_steps=3")
    train_stage(F.spec(one), data, tmp_path / "one", resume=False)
    two = F.recipe(tmp_path, "train.max_steps=3", "train.world_size=2")
    assert (one.train.grad_accum, two.train.grad_accum) == (2, 1)
    spec = write_spec(tmp_path / "spec.json", "runner.trainers.sft.driver", F.spec(two),
                      {"train_rows": str(data), "out_dir": str(tmp_path / "two"), "resume": False})
    metrics = launch(spec, launcher="torchrun", num_procs=2, log=lambda _: None)
    assert metrics["steps"] == 3
    assert F.losses(tmp_path / "two") == pytest.approx(F.losses(tmp_path / "one"), abs=1e-4)
    a, b = F.adapter_weights(tmp_path / "one" / "final"), F.adapter_weights(tmp_path / "two" / "final")
    assert all(float((a[k] - b[k]).abs().max()) < 1e-5 for k in a)


@F.cuda_procs(2)
def test_fomaml_in_two_processes_matches_one(tmp_path):
    """The one worker runs the fomaml trainer too: 2 processes (torchrun, gloo on CPU) take 2 tasks each of
    every meta-batch of 4 and reach what 1 process (this one, whatever its random state) does with all 4.
    Equal needs model.adapter.dropout 0 (F.META sets it): dropout draws differ per process. The losses are
    equal; the weights agree to ~1e-8 but not byte for byte, since 1 process sums the 4 tasks' gradients in
    another order than the 2 processes' all-reduce (2 nodes x 1 process = 1 node x 2 is bytes: test_train_multinode)."""
    import torch

    from runner.trainers import driver

    graph, art = F.meta(tmp_path)
    spec, tasks = F.fomaml_spec(graph), F.train_tasks(art)
    assert spec.outer.meta_batch_size == 4 and len(tasks) == 4
    torch.manual_seed(12345)   # a state of this process's own: the adapter's init must not depend on it
    one = driver("fomaml").train(spec, tasks, tmp_path / "one", resume=False)
    path = write_spec(tmp_path / "spec.json", "runner.trainers.fomaml.driver", spec,
                      {"tasks": tasks, "out_dir": str(tmp_path / "two"), "resume": False})
    two = launch(path, launcher="torchrun", num_procs=2, log=lambda _: None)
    assert one["steps"] == two["steps"] == 3 and two["tasks"] == 4
    assert len(F.losses(tmp_path / "one")) == 3
    assert F.losses(tmp_path / "two") == pytest.approx(F.losses(tmp_path / "one"), abs=1e-5)
    a, b = F.adapter_weights(tmp_path / "one" / "final"), F.adapter_weights(tmp_path / "two" / "final")
    assert set(a) == set(b) and all(float((a[k] - b[k]).abs().max()) < 1e-6 for k in a)
    assert any(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)   # it trained: B starts at zero
