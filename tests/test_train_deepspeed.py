"""DeepSpeed ZeRO-2/3 through SFTTrainer on CPU, in one process without a launcher. The first run on a
machine JIT-builds DeepSpeed's shared-memory comm op (about 30 s, cached afterwards)."""
import os
import shutil

import pytest
from helpers import train as F

from runner.trainers.sft.driver import train as train_stage


def test_zero_stages_train_like_plain_resume_and_leave_no_state(tmp_path):
    data = F.rows(tmp_path / "train.jsonl")
    for zero in ("zero2", "zero3"):   # a second DeepSpeed stage in the same process must work too
        r = F.recipe(tmp_path, "train.max_steps=3", f"train.deepspeed={zero}")
        metrics = train_stage(F.spec(r), data, tmp_path / zero, resume=False)
        assert metrics["steps"] == 3
        assert (tmp_path / zero / "checkpoints" / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's
        assert (tmp_path / zero / "final" / "adapter_model.safetensors").is_file()
    # the process is as it was: no process group, no DeepSpeed flags left for a later stage
    import torch.distributed as dist
    from accelerate.state import PartialState
    assert not dist.is_initialized()
    assert not {"RANK", "WORLD_SIZE", "MASTER_PORT", "ACCELERATE_USE_DEEPSPEED"} & set(os.environ)
    plain = F.recipe(tmp_path, "train.max_steps=3")
    train_stage(F.spec(plain), data, tmp_path / "plain", resume=False)
    assert PartialState().distributed_type.value == "NO"
    assert not list((tmp_path / "plain" / "checkpoints" / "checkpoint-2").glob("global_step*"))
    # same init, data order and accumulation: the same losses
    for zero in ("zero2", "zero3"):
        assert F.losses(tmp_path / zero) == pytest.approx(F.losses(tmp_path / "plain"), abs=1e-5)

    # resume from a DeepSpeed checkpoint (its own optimizer state layout) after a crash at step 3
    crashed = tmp_path / "crashed" / "checkpoints"
    shutil.copytree(tmp_path / "zero2" / "checkpoints" / "checkpoint-2", crashed / "checkpoint-2")
    r = F.recipe(tmp_path, "train.max_steps=3", "train.deepspeed=zero2")
    metrics = train_stage(F.spec(r), data, crashed.parent, resume=True)
    assert (metrics["resumed_from"], metrics["steps"]) == (2, 3)
    assert F.losses(crashed.parent) == pytest.approx(F.losses(tmp_path / "plain"), abs=1e-5)
