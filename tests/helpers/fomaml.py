"""Small FOMAML problems with known answers: a 1-layer Qwen2 (RMSNorm weights, which autograd saves
as they are) on random tokens, a functional FOMAML reference to compare the trainer with, and a
closed-form linear regression. Also a script, so several processes can train the same problem:

    python -m torch.distributed.run --nproc-per-node=2 tests/helpers/fomaml.py OUT.pt gloo
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

VOCAB = 32


def tiny_model(dtype=torch.float64, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=False)
    m = Qwen2ForCausalLM(config).to(dtype)
    # RMSNorm weights start at 1; move them so their gradients are not all alike
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return m


def batch(gen: torch.Generator, rows: int = 2, length: int = 6) -> dict:
    ids = torch.randint(0, VOCAB, (rows, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, -1] = 0                       # one padded position, as real batches have
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100                  # a masked prompt
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tasks(n: int, *, inner_steps: int, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [{"support": [batch(gen) for _ in range(inner_steps)], "query": batch(gen)} for _ in range(n)]


def items(task_list: list[dict], per_item: int) -> list[dict]:
    return [{"tasks": task_list[i:i + per_item]} for i in range(0, len(task_list), per_item)]


def config(out: str | Path, **kw):
    from runner.trainers.fomaml.fomaml_config import FOMAMLConfig

    base = dict(output_dir=str(out), max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant",
                warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, per_device_train_batch_size=1,
                gradient_accumulation_steps=1, inner_learning_rate=0.3, bf16=False, fp16=False, use_cpu=True,
                report_to="none", save_strategy="no", logging_steps=1, activation_checkpointing=False, seed=0,
                disable_tqdm=True, dataloader_num_workers=0, include_num_input_tokens_seen="non_padding")
    base.update(kw)
    return FOMAMLConfig(**base)


def train(model, dataset, out, *, setup=None, peft_config=None, **kw) -> tuple[dict[str, torch.Tensor], object]:
    """(every parameter after training, the trainer); `setup(trainer)` runs before training."""
    from runner.trainers.fomaml.fomaml_trainer import FOMAMLTrainer

    trainer = FOMAMLTrainer(model=model, args=config(out, **kw), train_dataset=dataset, peft_config=peft_config)
    if setup:
        setup(trainer)
    trainer.train()
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}, trainer


class Linear(torch.nn.Module):
    """y = x . w with the mean squared error: the batch's `input_ids` hold x (float), `labels` y."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, input_ids, attention_mask=None, labels=None):
        from types import SimpleNamespace
        return SimpleNamespace(loss=((input_ids @ self.w - labels) ** 2).mean())


def regression_batch(gen: torch.Generator, w_true: torch.Tensor, rows: int = 5, dtype=torch.float64) -> dict:
    x = torch.randn(rows, len(w_true), generator=gen, dtype=torch.float64)
    y = x @ w_true + 0.1 * torch.randn(rows, generator=gen, dtype=torch.float64)
    return {"input_ids": x.to(dtype), "attention_mask": torch.ones(rows, dtype=torch.long), "labels": y.to(dtype)}


def reference_step(model, task_list: list[dict], inner_lr: float, outer_lr: float) -> dict[str, torch.Tensor]:
    """One FOMAML step computed functionally: theta' by K explicit SGD steps (torch.func), then
    theta - outer_lr * mean_t grad L_query(theta'_t)."""
    from torch.func import functional_call

    theta = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss(params, b):
        return functional_call(model, params, (), b).loss

    meta = {n: torch.zeros_like(p) for n, p in theta.items()}
    for t in task_list:
        fast = dict(theta)
        for b in t["support"]:
            g = torch.func.grad(loss)(fast, b)
            fast = {n: fast[n] - inner_lr * g[n] for n in fast}
        g = torch.func.grad(loss)(fast, t["query"])
        for n in meta:
            meta[n] += g[n] / len(task_list)
    new = {n: theta[n] - outer_lr * meta[n] for n in theta}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(new[n])
    return new


def main(argv: list[str]) -> int:
    out, mode = Path(argv[0]), argv[1]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    # 2 meta-steps of 4 tasks each; this process trains items rank, rank+world, ...
    all_tasks = tasks(8, inner_steps=2)
    kw = {"max_steps": 2}
    dtype = torch.float64
    params, _ = train(tiny_model(dtype), items(all_tasks, 4 // world), out.parent / f"run-{mode}", **kw)
    if rank == 0:
        torch.save(params, out)
    from runner.train.distributed import shutdown
    shutdown()   # as the runner's worker does: a gloo group left to exit can abort the process
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
