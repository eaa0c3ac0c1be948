"""Training items for FOMAMLTrainer from tasks' tokenized support and query rows.

Item i belongs to meta-step i // slots (slots = processes x gradient accumulation) and holds tasks
[slot*T, (slot+1)*T) of that step's meta-batch, T = meta_batch_size / slots. A meta-step's draw (which
tasks, which support and query rows) depends only on the seed and the step number, so the same
meta-batch is trained whatever the split over processes and accumulation steps, and every step sees
fresh rows. Items are built when asked for: nothing proportional to the number of steps is held."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

Pair = tuple[list[int], list[int]]


@dataclass(frozen=True)
class TaskRows:
    name: str
    support: Sequence[Pair]
    query: Sequence[Pair]


def collate(rows: Sequence[Pair], pad_id: int) -> dict:
    """Right-padded `input_ids`, `attention_mask` and `labels` (-100 on padding)."""
    import torch

    n = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def draw_batches(rng: random.Random, n: int, batches: int, size: int) -> list[list[int]]:
    """`batches` index lists of `size` (at most n) rows: without replacement across the batches while
    the rows last, so a task's support batches repeat a row only when it has too few."""
    size = min(size, n)
    order: list[int] = []
    out = []
    for _ in range(batches):
        if len(order) < size:
            order = rng.sample(range(n), n)
        out.append(sorted(order[:size]))
        order = order[size:]
    return out


class MetaDataset:
    """A map-style dataset of FOMAML items (see the module docstring)."""

    def __init__(self, tasks: Sequence[TaskRows], *, steps: int, meta_batch_size: int, slots: int,
                 inner_steps: int, inner_batch_size: int, query_batch_size: int, seed: int, pad_id: int):
        if meta_batch_size % slots:
            raise ValueError(f"meta_batch_size {meta_batch_size} is not a multiple of processes x gradient "
                             f"accumulation = {slots}")
        empty = [t.name for t in tasks if not t.support or not t.query]
        if empty:
            raise ValueError(f"tasks without support or query rows: {', '.join(empty)}")
        if not tasks:
            raise ValueError("no tasks to train on")
        self.tasks, self.steps, self.m, self.slots = list(tasks), steps, meta_batch_size, slots
        self.k, self.b, self.q = inner_steps, inner_batch_size, query_batch_size
        self.seed, self.pad_id = seed, pad_id
        self._cached: tuple[int, list] | None = None

    def __len__(self) -> int:
        return self.steps * self.slots

    def draw(self, step: int) -> list[tuple[int, list[list[int]], list[int]]]:
        """The meta-batch of `step`: (task index, support batches, query rows) per task."""
        if self._cached and self._cached[0] == step:
            return self._cached[1]
        rng = random.Random(f"fomaml:{self.seed}:{step}")
        n = len(self.tasks)
        chosen = rng.sample(range(n), self.m) if self.m <= n else [rng.randrange(n) for _ in range(self.m)]
        out = []
        for t in chosen:
            task = self.tasks[t]
            support = draw_batches(rng, len(task.support), self.k, self.b)
            query = draw_batches(rng, len(task.query), 1, self.q)[0]
            out.append((t, support, query))
        self._cached = (step, out)
        return out

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        step, slot = divmod(i, self.slots)
        per = self.m // self.slots
        items = []
        for t, support, query in self.draw(step)[slot * per:(slot + 1) * per]:
            task = self.tasks[t]
            items.append({"support": [collate([task.support[j] for j in b], self.pad_id) for b in support],
                          "query": collate([task.query[j] for j in query], self.pad_id)})
        return {"tasks": items}


def pad_id(tok) -> int:
    """What meta-batches are padded with: the tokenizer's pad token, else its EOS."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        from ..errors import RecipeError
        raise RecipeError("the tokenizer has neither a pad nor an eos token to pad meta-batches with")
    return pad
