"""Evaluation (per-source loss on the training masks, generation stopping at end-of-turn) and
export (adapter and merged model load with peft / transformers as they are)."""
import json
import math

import pytest
import torch
from helpers import train as F

from runner.train import loading
from runner.train import rows as R
from runner.train.evaluate import evaluate_stage
from runner.train.export import export
from runner.trainers.sft.driver import train as train_stage


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    r = F.recipe(tmp, "output.merge=true")
    a, b = F.rows(tmp / "a.jsonl"), F.rows(tmp / "b.jsonl", kind="b")
    train_stage(F.spec(r), a, tmp / "out", resume=False)
    return r, tmp / "out" / "final", {"a": a, "b": b}, tmp


def test_loss_per_source_on_the_training_masks(lora_run):
    r, final, sets, _ = lora_run
    result = evaluate_stage(F.spec(r, kind="evaluate"), final, sets, prompts=[])
    assert set(result["loss"]) == {"a", "b"} and result["samples"] == []
    net, tok = loading.for_inference(F.spec(r), final)
    for source, path in sets.items():
        row = result["loss"][source]
        pairs = R.pairs(path)[:16]                               # evaluate.max_rows
        assert row["rows"] == 16
        assert row["tokens"] == sum(sum(x != -100 for x in labels[1:]) for _, labels in pairs)
        with torch.no_grad():   # token-weighted mean of the model's own per-row loss
            total = sum(net(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
                        * sum(x != -100 for x in labels[1:]) for ids, labels in pairs)
        assert row["loss"] == pytest.approx(total / row["tokens"], rel=1e-5)
        assert row["perplexity"] == pytest.approx(math.exp(row["loss"]))


def test_sampling_is_seeded(lora_run):
    r, final, sets, _ = lora_run
    import dataclasses
    gen = dataclasses.replace(r.evaluate.generate, temperature=0.9, top_p=0.9, no_repeat_ngram_size=2)
    r = dataclasses.replace(r, evaluate=dataclasses.replace(r.evaluate, generate=gen))
    one = evaluate_stage(F.spec(r, kind="evaluate"), final, {}, prompts=["question 1", "poem 2"])["samples"]
    two = evaluate_stage(F.spec(r, kind="evaluate"), final, {}, prompts=["poem 2"])["samples"]
    assert one[1] == two[0]                                   # a prompt's sample ignores the others
    assert all(s["tokens"] <= 12 for s in one)                # max_new_tokens


def test_export_adapter_and_merged_load_as_they_are(lora_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r, final, _, tmp = lora_run
    manifest = export(F.spec(r, kind="export"), final, tmp / "export", fingerprint="data-abc", stage="main")
    assert manifest["data_fingerprint"] == "data-abc" and manifest["exported"] == {"adapter": "adapter",
                                                                                    "merged": "merged"}
    assert json.loads((tmp / "export" / "export_manifest.json").read_text()) == manifest
    assert not (tmp / "export" / "adapter" / "training_args.bin").exists()

    ids = torch.tensor([R.prompt_ids("question 5", F.spec(r), loading.load_base(F.spec(r))[1])])
    reference = loading.for_inference(F.spec(r), final)[0](input_ids=ids).logits
    base, _ = loading.load_base(F.spec(r))                       # builtin:tiny-random's base: the recipe's seed
    adapter = PeftModel.from_pretrained(base, str(tmp / "export" / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(tmp / "export" / "merged")).eval()
    with torch.no_grad():
        torch.testing.assert_close(adapter(input_ids=ids).logits, reference)
        torch.testing.assert_close(merged(input_ids=ids).logits, reference, rtol=1e-4, atol=1e-4)


def test_generation_stops_at_end_of_turn(tmp_path):
    """Full fine-tuning (adapter none) learns "ok<|im_end|>"; generation stops there, and the full
    model exports as a plain transformers model."""
    from transformers import AutoModelForCausalLM

    r = F.recipe(tmp_path, "model.adapter.type=none", "train.max_steps=30", "train.learning_rate=3.0e-3",
                 "train.micro_batch_size=4", "train.save_steps=1000")
    data = F.rows(tmp_path / "ok.jsonl", kind="ok")
    train_stage(F.spec(r), data, tmp_path / "out", resume=False)
    final = tmp_path / "out" / "final"
    sample, = evaluate_stage(F.spec(r, kind="evaluate"), final, {}, prompts=["say ok 99"])["samples"]
    assert sample["stopped"] and sample["text"] == "ok" and sample["tokens"] < 12

    assert export(F.spec(r, kind="export"), final, tmp_path / "export", fingerprint="f")["exported"] == {"model": "model"}
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "export" / "model"))


def test_role_leak_and_health_rates():
    from runner.builtin import load_tokenizer
    from runner.train.evaluate import health, role_leak

    tok = load_tokenizer("builtin:tiny-random")
    assert not role_leak("欲窮千里目，\n更上一層樓。", tok)
    assert not role_leak("The user: field is optional.", tok)           # a role word mid-line is text
    assert role_leak("Paris.\nuser: and Spain?", tok)                    # the model writes the next turn
    assert role_leak("Paris.\n  Assistant : sure", tok)
    assert role_leak("ok\n### Instruction:\nmore", tok)
    assert role_leak("Paris.<|im_start|>user", tok)                      # a special token of the template
    assert role_leak("Paris.<|im_end|>", tok) and not role_leak("Paris.<|im_end|>", tok, [3])
    gens = [{"stopped": True, "leaked": False}, {"stopped": False, "leaked": True},
            {"stopped": True, "leaked": True}, {"stopped": True, "leaked": False}]
    assert health(gens) == {"stop_rate": 0.75, "role_leak_rate": 0.5, "generations": 4, "stopped": 3, "leaked": 2}
    assert health([])["stop_rate"] is None
