"""train.shapes: bucketed pads each micro batch to a power-of-two bucket and to micro_batch_size rows, and
changes nothing else: the poetry recipe on builtin:tiny trains the same per-step losses and the same adapter
as the dynamic path. With torch_compile it compiles once per bucket and never again (torch._dynamo's
counters); the stage's speed facts (tokens per step, padding share, recompiles) reach metrics.json and the
run log. torch_compile: reduce-overhead (CUDA graphs) is refused on a CPU with one line."""
import json

import pytest
import torch
from helpers import train as F

from runner import api
from runner.errors import RecipeError
from runner.train.batch import Batches, buckets
from runner.trainers.sft import sft_config
from runner.trainers.sft.driver import train as train_stage

POEMS = 11          # micro batch 2 x accumulation 4: one step of 8 poems, then 3 (the last micro batch is 1 poem)
POETRY = ["model.base=builtin:tiny", "train.deepspeed=null", "train.precision=fp32", "train.epochs=1",
          "model.adapter.dropout=0.0",    # dropout draws depend on the tensor's shape, so they would differ
          "train.logging_steps=1", "train.save_steps=1000", "train.report_to=[]"]


def _poetry(*overrides):
    return api.load(F.REPO / "recipes" / "poetry_lora.yaml", POETRY + list(overrides))


@pytest.fixture(scope="module")
def poems(tmp_path_factory):
    """The first POEMS real poems, mapped as recipes/poetry_lora.yaml maps them and rendered by its template."""
    from runner.chat import tokenizer_for
    from runner.chat.templates import RenderCheck
    from runner.steps.render import _render_file

    tmp = tmp_path_factory.mktemp("poems")
    records = tmp / "records.jsonl"
    with open(records, "w", encoding="utf-8") as f:
        lines = (json.loads(x) for x in open(F.REPO / "data" / "tang_poems.jsonl", encoding="utf-8"))
        for i, p in enumerate([p for p in lines if len(p["paragraphs"]) > 1][:POEMS]):
            msgs = [{"role": "user", "content": "以下是一首唐詩的第一句話，請用你的知識判斷並完成整首詩。\n" + p["paragraphs"][0]},
                    {"role": "assistant", "content": "\n".join(p["paragraphs"][1:])}]
            f.write(json.dumps({"id": f"p{i}", "messages": msgs}, ensure_ascii=False) + "\n")
    r = _poetry()
    tok = tokenizer_for("builtin:tiny", F.REPO, trust_remote_code=False)
    _render_file(records, tmp / "train.jsonl", tok, r.template, "chatml", check=RenderCheck(tok, chat="chatml"))
    return tmp / "train.jsonl"


def _train(tmp_path, rows, *overrides):
    r = _poetry(*overrides)
    metrics = train_stage(F.spec(r), rows, tmp_path / "out", resume=False)
    return metrics, F.losses(tmp_path / "out"), F.adapter_weights(tmp_path / "out" / "final")


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory, poems):
    return _train(tmp_path_factory.mktemp("dynamic"), poems)


def test_buckets_are_powers_of_two_up_to_the_cutoff():
    assert buckets(256) == (16, 32, 64, 128, 256)
    assert buckets(100) == (16, 32, 64, 100)
    assert buckets(8) == (8,)


def test_a_partial_micro_batch_is_filled_with_rows_that_train_nothing():
    def collate(examples):   # TRL's collator, for two rows of 3 and 5 tokens
        return {"input_ids": torch.tensor([[5, 6, 7, 1, 1], [5, 6, 7, 8, 9]]),
                "labels": torch.tensor([[-100, 6, 7, -100, -100], [-100, 6, 7, 8, 9]]),
                "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    b = Batches(collate, pad_id=1, micro=4, max_length=64)
    out = b([None, None])
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (4, 16) for k in out}
    assert (out["labels"][2:] == -100).all() and (out["attention_mask"][2:] == 0).all()
    assert (out["labels"][:, 5:] == -100).all() and (out["input_ids"][:, 5:] == 1).all()
    assert out["labels"][1, :5].tolist() == [-100, 6, 7, 8, 9]
    assert b.real == 8 and b.total == 64 and b.padding_share == pytest.approx(1 - 8 / 64)


def test_bucketed_trains_like_dynamic(tmp_path, poems, dynamic):
    metrics, losses, adapter = _train(tmp_path, poems, "train.shapes=bucketed")
    d_metrics, d_losses, d_adapter = dynamic
    assert len(losses) == 2 and losses == pytest.approx(d_losses, abs=1e-5)
    assert adapter.keys() == d_adapter.keys()
    # Adam divides each gradient by its running RMS, so a rounding difference in a near-zero gradient moves
    # a weight by up to ~learning_rate (2e-4) per step: the adapters agree to that, the losses to 1e-5
    assert max((adapter[k] - d_adapter[k]).abs().max().item() for k in adapter) < 2e-4
    # the same tokens trained; only padding grew (to the bucket, and the filler rows of the last micro batch)
    assert metrics["tokens"] == d_metrics["tokens"] and metrics["tokens_per_step"] == d_metrics["tokens_per_step"]
    assert d_metrics["tokens_per_step"] == d_metrics["tokens"] / 2
    assert 0 < d_metrics["padding_share"] < metrics["padding_share"] < 1
    assert "recompiles" not in metrics and "mfu" not in metrics     # no compile; a CPU has no MFU


def test_compiled_bucketed_epoch_compiles_once_per_bucket(tmp_path, poems, monkeypatch):
    from torch._dynamo.utils import counters

    from runner.trainers.sft import sft_trainer
    # dynamo's guards and recompiles are the same whatever backend turns its graphs into kernels: aot_eager
    # traces forward and backward like inductor, without minutes of C++ compilation on a CPU
    real = sft_config.to_sft_config
    monkeypatch.setattr(sft_config, "to_sft_config",
                        lambda *a, **k: _with(real(*a, **k), torch_compile_backend="aot_eager"))
    compiled_at: list[tuple[tuple[int, ...], int]] = []
    original = sft_trainer.CompileCountingSFTTrainer.compute_loss

    def compute_loss(self, model, inputs, **kw):
        before = counters["stats"]["unique_graphs"]
        out = original(self, model, inputs, **kw)
        compiled_at.append((tuple(inputs["input_ids"].shape), counters["stats"]["unique_graphs"] - before))
        return out
    monkeypatch.setattr(sft_trainer.CompileCountingSFTTrainer, "compute_loss", compute_loss)
    torch._dynamo.reset()
    metrics, losses, _ = _train(tmp_path, poems, "train.shapes=bucketed", "train.torch_compile=true")
    shapes = [s for s, _ in compiled_at]
    assert len(shapes) == 6 and all(s[0] == 2 and s[1] in buckets(256) for s in shapes)
    assert len(set(shapes)) > 1                     # the epoch does see several buckets
    for i, (shape, new) in enumerate(compiled_at):
        assert (new > 0) == (shape not in shapes[:i]), (i, compiled_at)   # compiled on each bucket's first step only
    assert metrics["recompiles"] == 0 and len(losses) == 2


def _with(args, **fields):
    for k, v in fields.items():
        setattr(args, k, v)
    return args


def test_run_log_and_report_say_why_a_stage_is_slow(tmp_path, capsys):
    from runner import cli

    r = F.recipe(tmp_path)
    code = cli.main(["run", str(r.file), "--output", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                     "--set", "train.shapes=bucketed", "--set", "train.max_steps=2"])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code == 0, out
    assert "tokens per optimizer step, padding" in out and "shapes bucketed" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    train = report["stages"][0]["metrics"]["train"]
    assert train["tokens_per_step"] > 0 and 0 < train["padding_share"] < 1 and "mfu" not in train
    assert "tokens_per_step" in (tmp_path / "run" / "report.md").read_text()


def test_reduce_overhead_is_refused_on_a_cpu_with_one_line(tmp_path, poems):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, where reduce-overhead runs")
    with pytest.raises(RecipeError, match="^train.torch_compile reduce-overhead replays CUDA graphs and needs a "
                                          "CUDA device; on this machine use torch_compile: true") as e:
        train_stage(F.spec(_poetry("train.torch_compile=reduce-overhead")), poems, tmp_path / "out", resume=False)
    assert "\n" not in str(e.value)


def test_bucketed_with_padding_free_is_one_validation_line(tmp_path):
    with pytest.raises(RecipeError, match="train.shapes: bucketed pads every micro batch to a fixed shape"):
        F.recipe(tmp_path, "train.shapes=bucketed", "train.padding_free=true")


def test_reduce_overhead_reaches_trl_as_a_compile_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(sft_config, "check_compile", lambda train: None)   # as on a CUDA machine
    args = sft_config.to_sft_config(F.spec(F.recipe(tmp_path, "train.torch_compile=reduce-overhead")), tmp_path)
    assert args.torch_compile and args.torch_compile_mode == "reduce-overhead"
    plain = sft_config.to_sft_config(F.spec(F.recipe(tmp_path)), tmp_path)
    assert not plain.torch_compile and plain.torch_compile_mode is None
