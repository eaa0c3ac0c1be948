"""Speed levers are options that never change what a recipe means: padding-free batching, micro_batch_size
auto, torch.compile train like the plain path (same losses within fp32 tolerance); Liger needs CUDA. Also
the run log line and the installed-versions check."""
import json
import subprocess
import sys
from importlib import metadata

import pytest
import torch
from helpers import train as F

from runner.train import versions
from runner.errors import RecipeError
from runner.train import batch
from runner.trainers.sft import sft_config
from runner.trainers.sft.driver import train as train_stage

STEPS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return F.rows(tmp_path_factory.mktemp("levers") / "train.jsonl")


@pytest.fixture(scope="module")
def plain(tmp_path_factory, data):
    """micro batch 2 x accumulation 2, padded: the reference."""
    tmp = tmp_path_factory.mktemp("plain")
    r = F.recipe(tmp, f"train.max_steps={STEPS}")
    train_stage(F.spec(r), data, tmp / "out", resume=False)
    return F.losses(tmp / "out")


def _losses(tmp_path, data, *overrides):
    r = F.recipe(tmp_path, f"train.max_steps={STEPS}", *overrides)
    train_stage(F.spec(r), data, tmp_path / "out", resume=False)
    return F.losses(tmp_path / "out")


def test_padding_free_trains_like_padded(tmp_path, data, plain, capsys):
    # the rows have different lengths, so the padded batches do carry padding
    assert len({len(json.loads(line)["input_ids"]) for line in open(data)}) > 1
    losses = _losses(tmp_path, data, "train.padding_free=true")
    assert len(losses) == STEPS and losses == pytest.approx(plain, abs=1e-5)
    args = sft_config.to_sft_config(F.spec(F.recipe(tmp_path, "train.padding_free=true")), tmp_path)
    assert args.padding_free and not args.packing and args.per_device_train_batch_size == 2   # still sequences
    assert "padding-free on" in capsys.readouterr().out


def test_micro_batch_auto_keeps_the_batch(tmp_path, data, plain, capsys):
    losses = _losses(tmp_path, data, "train.micro_batch_size=auto")
    # on a CPU: the largest divisor of batch_size 4 within CPU_TOKENS, so one micro batch of 4 per step
    assert "micro batch 4 x accumulation 1 x 1 = batch 4" in capsys.readouterr().out
    assert len(losses) == STEPS and losses == pytest.approx(plain, abs=1e-5)


def test_training_runs_without_cudnn_attention_and_restores_it(tmp_path, data, monkeypatch):
    # cuDNN attention re-plans every new batch shape (2.3x slower steps on an H200): off while training,
    # the caller's setting back afterwards, also when training fails
    from runner.trainers.sft import driver as run_sft
    seen = []

    def fake_train(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        raise RuntimeError("stop here")
    monkeypatch.setattr(run_sft, "_train", fake_train)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        for setting in (True, False):
            torch.backends.cuda.enable_cudnn_sdp(setting)
            with pytest.raises(RuntimeError, match="stop here"):
                train_stage(F.spec(F.recipe(tmp_path)), data, tmp_path / "out", resume=False)
            assert torch.backends.cuda.cudnn_sdp_enabled() is setting
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
    assert seen == [False, False]


def test_auto_picks_the_largest_divisor_that_fits(tmp_path):
    r = F.recipe(tmp_path, "train.batch_size=24", "train.world_size=2", "train.micro_batch_size=auto")
    assert batch.candidates(r.train) == [12, 6, 4, 3, 2, 1]
    tried = []

    def fits(n):
        tried.append(n)
        return n <= 5
    assert batch.pick(batch.candidates(r.train), fits) == 4 and tried == [12, 6, 4]
    assert batch.pick([2, 1], lambda n: False) is None
    assert r.train.grad_accum is None
    if not torch.cuda.is_available():
        # on a CPU the rule is tokens per micro batch: 12 rows of 1000 tokens exceed CPU_TOKENS, 6 do not
        rows = [([1] * 1000, [1] * 1000)] * 12
        resolved = batch.resolve(r.train, None, None, rows, precision="fp32", pad_id=0)
        assert resolved.micro_batch_size == 6 and resolved.grad_accum == 2


@F.needs_cuda("the micro_batch_size auto probe runs forward+backward passes on the GPU")
def test_auto_probe_on_cuda(tmp_path, data, plain):
    losses = _losses(tmp_path, data, "train.micro_batch_size=auto")
    assert losses == pytest.approx(plain, abs=1e-4)


def test_torch_compile_trains_like_eager(tmp_path, data, plain):
    losses = _losses(tmp_path, data, "train.torch_compile=true")
    assert len(losses) == STEPS and losses == pytest.approx(plain, abs=1e-4)


def test_liger_is_refused_without_cuda(tmp_path, data):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: test_liger_trains_like_plain covers it")
    r = F.recipe(tmp_path, "train.use_liger_kernel=true")
    with pytest.raises(RecipeError, match="use_liger_kernel needs a CUDA device"):
        train_stage(F.spec(r), data, tmp_path / "out", resume=False)


@F.needs_cuda("Liger's kernels are Triton kernels")
def test_liger_trains_like_plain(tmp_path, data, plain):
    pytest.importorskip("liger_kernel", reason="the liger-kernel package is not installed")
    assert _losses(tmp_path, data, "train.use_liger_kernel=true") == pytest.approx(plain, abs=1e-3)


@F.needs_cuda("bf16 autocast on a GPU")
def test_bf16_trains_close_to_fp32(tmp_path, data, plain):
    losses = _losses(tmp_path, data, "train.precision=bf16")
    assert losses == pytest.approx(plain, abs=5e-2)      # bf16 keeps ~3 significant digits


@F.needs_cuda("fp16 mixed precision needs a GPU (refused on a CPU)")
def test_fp16_trains_on_cuda(tmp_path, data, plain):
    losses = _losses(tmp_path, data, "train.precision=fp16")
    assert losses == pytest.approx(plain, abs=5e-2)


@F.needs_cuda("DeepSpeed over NCCL")
def test_deepspeed_on_nccl_trains_like_plain(tmp_path, data, plain, capfd):
    losses = _losses(tmp_path, data, "train.deepspeed=zero2")
    assert losses == pytest.approx(plain, abs=1e-5)
    err = capfd.readouterr().err
    assert "Gradient accumulation steps mismatch" not in err and "barrier(): using the device" not in err


def test_run_log_states_how_it_trains(tmp_path, data, plain, capfd):
    _losses(tmp_path, data, "train.deepspeed=zero2")
    out, err = capfd.readouterr()
    assert ("fp32, world size 1, micro batch 2 x accumulation 2 x 1 = batch 4; packing off, padding-free off, "
            "liger off, compile off, gradient checkpointing off, deepspeed zero2 (ZeRO-2)") in out
    assert "Gradient accumulation steps mismatch" not in out + err


def test_versions_outside_the_declared_range_are_one_line(monkeypatch):
    real = metadata.version
    fake = {"trl": "0.29.1", "transformers": "4.57.6"}

    def installed(name):
        if name == "peft":
            raise metadata.PackageNotFoundError(name)
        return fake.get(name) or real(name)
    found = versions.problems(installed)
    floors = versions.declared()
    assert found == [
        f"transformers 4.57.6 is installed but recipe needs transformers{floors['transformers']}: "
        f"pip install 'transformers{floors['transformers']}'",
        f"trl 0.29.1 is installed but recipe needs trl{floors['trl']}: pip install 'trl{floors['trl']}'",
        f"peft is not installed; recipe needs peft{floors['peft']}: pip install 'peft{floors['peft']}'",
    ]
    assert versions.problems() == []          # this environment is in range
    assert versions.problems(lambda n: "2.13.0+cpu" if n == "torch" else real(n)) == []   # local labels


def test_a_run_with_an_old_library_stops_with_one_line(tmp_path, monkeypatch, capsys):
    from runner import cli

    real = metadata.version
    monkeypatch.setattr(versions.metadata, "version", lambda n: "0.29.1" if n == "trl" else real(n))
    F.recipe(tmp_path)
    code = cli.main(["run", str(tmp_path / "recipe.yaml"), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "trl 0.29.1 is installed but recipe needs trl>=" in err[0]


def test_min_constraints_are_the_declared_floors():
    out = subprocess.run([sys.executable, str(F.REPO / ".ci" / "min_constraints.py")], capture_output=True,
                         text=True, check=True).stdout.split()
    pins = dict(line.split("==") for line in out)
    assert set(pins) == set(versions.TRAINING) - {"torch"}
    for name, pin in pins.items():
        assert versions.declared()[name] == f">={pin}"
