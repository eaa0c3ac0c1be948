"""The labels the model trains on are exactly the masks templates.render made: captured from the
batches SFTTrainer.compute_loss receives during train_stage, padded and packed."""
import torch
from helpers import train as F
from trl import SFTTrainer

from runner.builtin import load_tokenizer
from runner.train import rows as R
from runner.trainers.sft.driver import train as train_stage


def _capture(monkeypatch) -> list[dict]:
    seen = []
    original = SFTTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        seen.append({k: v.clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "compute_loss", compute_loss)
    return seen


def _expected(r, path):
    tok = load_tokenizer("builtin:tiny")
    return tok, {tuple(ids): labels for ids, labels in R.pairs(path)}


def _check_masks(tok, ids, labels):
    """-100 on the prompt and every role header; each <|im_end|> after an answer trained."""
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert all(lab == -100 for i, lab in zip(ids, labels) if i == im_start)
    text = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert "assistant\n" not in text and "user" not in text and "You are terse" not in text
    assert text.endswith("<|im_end|>") and sum(lab == im_end for lab in labels) == 1


def test_collated_labels_equal_rendered_masks(tmp_path, monkeypatch):
    seen = _capture(monkeypatch)
    r = F.recipe(tmp_path, "train.max_steps=3")
    data = F.rows(tmp_path / "train.jsonl")
    train_stage(F.spec(r), data, tmp_path / "out", resume=False)
    tok, expected = _expected(r, data)
    assert len(seen) == 3 * 2                          # 3 steps x 2 micro-batches (batch 4 / micro 2)
    for batch in seen:
        assert set(batch) == {"input_ids", "labels", "attention_mask"}
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            n = int(mask.sum())
            assert labels[n:].eq(-100).all() and ids[n:].eq(tok.pad_token_id).all()  # right padding
            ids, labels = ids[:n].tolist(), labels[:n].tolist()
            assert expected[tuple(ids)] == labels      # our labels, unchanged
            _check_masks(tok, ids, labels)


def test_packed_labels_equal_rendered_masks_and_loss(tmp_path, monkeypatch):
    seen = _capture(monkeypatch)
    r = F.recipe(tmp_path, "train.max_steps=2", "train.packing=true", "template.max_length=128")
    data = F.rows(tmp_path / "train.jsonl")
    train_stage(F.spec(r), data, tmp_path / "out", resume=False)
    tok, expected = _expected(r, data)
    packed = seen[0]
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] == 1     # padding-free
    pos = packed["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist() + [len(pos)]
    segments = []
    for s, e in zip(starts, starts[1:]):
        ids, labels = packed["input_ids"][0, s:e].tolist(), packed["labels"][0, s:e].tolist()
        # the collator masks each row's first token (nothing predicts it); ours is a prompt token anyway
        assert expected[tuple(ids)] == labels
        _check_masks(tok, ids, labels)
        segments.append((ids, labels))
    assert len(segments) >= 4                                  # 2 packs of 128 tokens, rows of 25-40

    # per-sequence attention: the packed loss is the loss of the rows on their own
    from runner.train.loading import for_training
    net = for_training(F.spec(r), None)[0].eval()
    with torch.no_grad():
        # use_cache=False as in training: with a cache, transformers does not look for packed rows
        whole = net(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                    labels=packed["labels"], use_cache=False).loss
        total = n = 0
        for ids, labels in segments:
            k = sum(lab != -100 for lab in labels[1:])
            total += net(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss * k
            n += k
    torch.testing.assert_close(whole, total / n, rtol=1e-5, atol=1e-5)
