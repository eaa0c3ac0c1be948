"""train_stage end to end on builtin:tiny: artifacts, LoRA placement, determinism, resume after a
crash, and stages continuing the previous stage's adapter."""
import json
import shutil

import pytest
import torch
from helpers import train as F

from runner.errors import RecipeError
from runner.train import loading
from runner.trainers.sft.driver import train as train_stage


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One uninterrupted 6-step run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("sft")
    r = F.recipe(tmp, "train.max_steps=6")
    data = F.rows(tmp / "train.jsonl")
    metrics = train_stage(F.spec(r), data, tmp / "out", resume=False)
    return r, data, tmp / "out", metrics


def test_artifacts_and_metrics(run):
    r, _, out, metrics = run
    assert metrics["steps"] == 6 and metrics["resumed_from"] == 0
    assert metrics["tokens"] > 0 and metrics["tokens_per_second"] > 0 and metrics["seconds"] > 0
    assert metrics["train_loss"] == pytest.approx(sum(F.losses(out)) / 6)
    assert len(F.losses(out)) == 6                                  # logging_steps 1
    assert json.loads((out / "metrics.json").read_text()) == metrics
    final = out / "final"
    for f in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        assert (final / f).is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]


def test_lora_on_the_target_modules_only(run):
    _, _, out, _ = run
    keys = F.adapter_weights(out / "final")
    modules = {k.split(".")[-3] for k in keys}                     # ...q_proj.lora_A.weight
    assert modules == {"q_proj", "v_proj"}
    assert len(keys) == 2 * 2 * 2                                   # 2 layers x 2 modules x (A, B)
    assert any(v.abs().sum() > 0 for k, v in keys.items() if "lora_B" in k)   # B left its zero init


def test_same_seed_same_run(run, tmp_path):
    r, data, out, _ = run
    train_stage(F.spec(r), data, tmp_path / "again", resume=False)
    assert F.losses(tmp_path / "again") == F.losses(out)
    a, b = F.adapter_weights(out / "final"), F.adapter_weights(tmp_path / "again" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_a_crash(run, tmp_path):
    """As after kill -9 at step 5: no final/, the last checkpoint at 4, a half-written checkpoint-6."""
    r, data, out, _ = run
    crashed = tmp_path / "crashed"
    shutil.copytree(out / "checkpoints", crashed / "checkpoints")
    (crashed / "checkpoints" / "checkpoint-6" / "trainer_state.json").unlink()   # cut off mid-save
    metrics = train_stage(F.spec(r), data, crashed, resume=True)
    assert metrics["resumed_from"] == 4 and metrics["steps"] == 6
    assert F.losses(crashed) == pytest.approx(F.losses(out), abs=1e-6)   # history kept, same steps 5-6
    a, b = F.adapter_weights(out / "final"), F.adapter_weights(crashed / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_next_stage_continues_the_adapter(run, tmp_path):
    r, _, out, _ = run
    net, _, peft_config = loading.for_training(F.spec(r), out / "final")
    assert peft_config is None                                      # no new adapter: the same one
    trained = {n.replace(".default", ""): p for n, p in net.named_parameters() if p.requires_grad}
    saved = F.adapter_weights(out / "final")
    assert set(trained) == set(saved) and all(torch.equal(trained[k], saved[k]) for k in saved)


def test_world_size_must_match_the_launch(tmp_path):
    r = F.recipe(tmp_path, "train.world_size=2")
    with pytest.raises(RecipeError, match="running in 1 processes but train.world_size is 2"):
        train_stage(F.spec(r), F.rows(tmp_path / "t.jsonl"), tmp_path / "out")


def test_trainable_tokens_train_their_rows_and_nothing_else(tmp_path):
    """adapter.trainable_tokens: the end-of-turn row (tied with the output head) trains with the LoRA
    adapter; every other row stays the base's; a stage that continues the adapter keeps training it."""
    from runner.train.loading import for_inference

    r = F.recipe(tmp_path, "train.max_steps=3", "model.adapter.trainable_tokens=[<|im_end|>]")
    train_stage(F.spec(r), F.rows(tmp_path / "t.jsonl"), tmp_path / "out", resume=False)
    base, tok = loading.load_base(F.spec(r))
    trained, _ = for_inference(F.spec(r), tmp_path / "out" / "final")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    before = base.get_input_embeddings().weight.detach()
    after = trained.merge_and_unload().get_input_embeddings().weight.detach()
    changed = (before - after).abs().sum(dim=1).nonzero().flatten().tolist()
    assert changed == [end]
    net, _, peft_config = loading.for_training(F.spec(r), tmp_path / "out" / "final")
    assert peft_config is None and any("trainable_tokens" in n for n, p in net.named_parameters() if p.requires_grad)


def test_trainable_tokens_must_be_tokens(tmp_path, capsys):
    from runner.cli import main

    r = F.recipe(tmp_path, "train.max_steps=1", "model.adapter.trainable_tokens=[<|im_endd|>]")
    with pytest.raises(RecipeError, match=r"'<\|im_endd\|>' is not one token of the model's tokenizer.*<\|im_end\|>"):
        train_stage(F.spec(r), F.rows(tmp_path / "t.jsonl"), tmp_path / "out", resume=False)
    assert main(["validate", str(tmp_path / "recipe.yaml"), "--set", "model.adapter.type=none",
                 "--set", "model.adapter.trainable_tokens=[<|im_end|>]"]) == 2
    assert "with adapter type none every embedding row trains already" in capsys.readouterr().err
