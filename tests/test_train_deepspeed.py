"""DeepSpeed ZeRO-2 through SFTTrainer on CPU, in one process without a launcher. The first run on a
machine JIT-builds DeepSpeed's shared-memory comm op (about 30 s, cached afterwards)."""
import os

import pytest
import train_fixtures as F

from runner.train.run_sft import train_stage


def test_zero2_trains_like_plain_and_leaves_no_state(tmp_path):
    r = F.recipe(tmp_path, "train.max_steps=3", "train.deepspeed=zero2")
    data = F.rows(tmp_path / "train.jsonl")
    metrics = train_stage(r, r.stages[0], data, tmp_path / "ds", resume=False)
    assert metrics["steps"] == 3
    assert (tmp_path / "ds" / "checkpoints" / "checkpoint-2" / "global_step2").is_dir()   # a DeepSpeed checkpoint
    assert (tmp_path / "ds" / "final" / "adapter_model.safetensors").is_file()
    # the process is as it was: no process group, no DeepSpeed flags left for a later stage
    import torch.distributed as dist
    from accelerate.state import PartialState
    assert not dist.is_initialized()
    assert not {"RANK", "WORLD_SIZE", "MASTER_PORT", "ACCELERATE_USE_DEEPSPEED"} & set(os.environ)
    plain = F.recipe(tmp_path, "train.max_steps=3")
    train_stage(plain, plain.stages[0], data, tmp_path / "plain", resume=False)
    assert PartialState().distributed_type.value == "NO"
    assert not list((tmp_path / "plain" / "checkpoints" / "checkpoint-2").glob("global_step*"))
    # same init, data order and accumulation: the same losses
    assert F.losses(tmp_path / "ds") == pytest.approx(F.losses(tmp_path / "plain"), abs=1e-5)
