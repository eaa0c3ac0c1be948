"""The recipe -> SFTConfig / LoraConfig / DeepSpeed config mapping (no training)."""
import dataclasses
import json

import pytest
from helpers import train as F

from runner.errors import RecipeError
from runner.train import loading
from runner.trainers.sft import sft_config
from runner.train.distributed import PRESET_DIR, PRESETS, deepspeed_config


def test_sft_config_maps_the_recipe(tmp_path):
    r = F.recipe(tmp_path, "train.max_steps=null", "train.epochs=3", "train.batch_size=8", "train.world_size=2",
                 "train.warmup_ratio=0.1", "train.weight_decay=0.01", "train.max_grad_norm=0.5",
                 "train.lr_scheduler=cosine", "train.save_steps=7", "train.logging_steps=3",
                 "train.gradient_checkpointing=true", "output.save_total_limit=3")
    args = sft_config.to_sft_config(F.spec(r), tmp_path / "ckpt")
    assert type(args).__name__ == "SFTConfig"
    assert args.per_device_train_batch_size == 2
    assert args.gradient_accumulation_steps == 8 // (2 * 2) == r.train.grad_accum
    assert (args.num_train_epochs, args.max_steps) == (3, -1)
    assert (args.learning_rate, args.lr_scheduler_type.value) == (0.001, "cosine")
    assert args.get_warmup_steps(200) == 20                  # a ratio, whichever field this transformers reads
    assert (args.weight_decay, args.max_grad_norm) == (0.01, 0.5)
    assert (args.seed, args.data_seed) == (7, 7)
    assert not args.bf16 and not args.fp16                  # CPU: auto is fp32, despite TRL's bf16 default
    assert args.gradient_checkpointing and getattr(args, "activation_checkpointing", True)   # renamed in 5.18
    assert (args.save_steps, args.save_total_limit, args.logging_steps) == (7, 3, 3)
    assert args.max_length == 64 and not args.packing and not args.padding_free
    assert args.report_to in ([], "none", ["none"])
    assert args.dataloader_num_workers == 0 and args.output_dir == str(tmp_path / "ckpt")


def test_packing_max_steps_and_ewc_config(tmp_path):
    r = F.recipe(tmp_path, "train.packing=true", "train.report_to=[tensorboard]", extra=F.STAGES)
    args = sft_config.to_sft_config(F.spec(r, "first"), tmp_path)
    assert args.packing and args.padding_free and args.packing_strategy == "bfd" and args.max_steps == 4
    assert args.report_to == ["tensorboard"]
    ewc_args = sft_config.to_sft_config(F.spec(r, "second"), tmp_path)
    assert type(ewc_args).__name__ == "EwcConfig" and ewc_args.ewc_lambda == 50


def test_batch_must_divide_and_no_fp16_on_cpu(tmp_path):
    r = F.recipe(tmp_path)   # validation refuses this too; the mapping must not round it either
    spec = dataclasses.replace(F.spec(r), train=dataclasses.replace(r.train, batch_size=6, micro_batch_size=4))
    with pytest.raises(RecipeError, match="not a multiple"):
        sft_config.to_sft_config(spec, tmp_path)
    r = F.recipe(tmp_path, "train.precision=fp16")
    with pytest.raises(RecipeError, match="fp16 needs a CUDA"):
        sft_config.to_sft_config(F.spec(r), tmp_path)


def test_lora_config(tmp_path):
    r = F.recipe(tmp_path)
    c = loading.lora_config(r.model.adapter)
    assert (c.r, c.lora_alpha, c.lora_dropout, set(c.target_modules)) == (4, 8, 0.0, {"q_proj", "v_proj"})
    assert c.task_type == "CAUSAL_LM"


def test_deepspeed_presets_are_filled_from_the_recipe(tmp_path):
    r = F.recipe(tmp_path, "train.batch_size=8", "train.max_grad_norm=0.3")
    for name in PRESETS:
        assert json.loads((PRESET_DIR / f"{name}.json").read_text())["train_batch_size"] == "auto"
        c = deepspeed_config(name, r.train, tmp_path)
        assert (c["train_micro_batch_size_per_gpu"], c["gradient_accumulation_steps"], c["train_batch_size"]) \
            == (2, 4, 8)
        assert c["gradient_clipping"] == 0.3 and c["bf16"]["enabled"] is False and c["fp16"]["enabled"] is False
        assert c["zero_optimization"]["stage"] == int(name[4])


def test_deepspeed_user_file_must_agree(tmp_path):
    r = F.recipe(tmp_path)
    (tmp_path / "ds.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 2,
                                                  "gradient_accumulation_steps": 3,
                                                  "zero_optimization": {"stage": 2}}))
    with pytest.raises(RecipeError, match="gradient_accumulation_steps = 3 but the recipe gives 2"):
        deepspeed_config("ds.json", r.train, tmp_path)
    with pytest.raises(RecipeError, match="neither a preset"):
        deepspeed_config("zero9", r.train, tmp_path)
