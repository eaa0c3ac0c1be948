"""Few-shot evaluation: does a model adapt to a task it never saw?

For each model (the starting model, the SFT control, FOMAML), each held-out task, each k and seed:
start from the model's snapshot, adapt its trainable (LoRA) parameters with FOMAML's inner loop
(`inner_loop.adapt`: meta.inner.steps SGD steps of meta.inner.learning_rate on batches of the
k shots), and measure on the task's whole test file before and after: the token-mean loss, and the
exact match (the share of test rows whose greedy answer is the reference response word for word, read off
the loss's own forward). The snapshot is restored after every adaptation, so no measurement sees
another's shots.

With `few_shot_eval.answer_pattern` (GSM8K: `#### (\\S+)`), each test prompt is also answered by greedy
generation, and the answer the pattern finds is compared with the one in the reference response:
exact-match accuracy, before and after each adaptation. A reference without a match is left out (counted)."""
from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

from .process import flushing_subnormals
from .spec import FewShotSpec


@flushing_subnormals()
def evaluate(spec: FewShotSpec, models: dict[str, Path | None], held_out: list[dict], rendered: Path,
             records: Path, *, trust: bool = False, log=print) -> list[dict[str, Any]]:
    """Rows {task, shots, seed, model, loss_before, loss_after, exact_before, exact_after}. `models`: name -> final/ folder (None
    for the starting model: the base with a fresh adapter, as training starts). `held_out`: the tasks
    step's plan entries ({name, dir, order: {seed: [pool index]}}). `rendered`: the render.tasks step's
    tasks/ folder (the rows every loss and adaptation reads); `records`: the split step's (the test
    conversations whose answers are matched)."""
    import torch

    from .inner_loop import adapt, trainable
    from .loading import for_training, to_device
    from .meta_data import collate, draw_batches, pad_id
    from .rows import pairs

    fs, inner = spec.few_shot_eval, spec.inner
    out = []
    for name, path in models.items():
        net, tok, peft_config = for_training(spec, path, trust=trust)
        if peft_config is not None:
            from peft import get_peft_model
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)
                net = get_peft_model(net, peft_config)
        net = to_device(net)
        net.train()   # as in the inner loop of training (dropout included)
        device = next(net.parameters()).device
        params = trainable(net)
        snapshot = [p.detach().clone() for p in params]
        pad = pad_id(tok)
        for task in held_out:
            d = rendered / task["dir"]
            test = pairs(d / "test.jsonl")
            pool = pairs(d / "support.jsonl") + pairs(d / "query.jsonl")
            before, exact_before = _loss(net, test, pad, device)
            questions = _questions(records / task["dir"] / "test.jsonl", fs.answer_pattern, spec, tok) \
                if fs.answer_pattern else None
            answerable = questions is not None and bool(questions[0])
            acc_before = _accuracy(net, tok, questions, spec) if answerable else None
            for seed, order in sorted(task["order"].items(), key=lambda kv: int(kv[0])):
                for k in fs.shots:
                    shots = [pool[i] for i in order[:k]]
                    rng = random.Random(f"few_shot:{spec.seed}:{task['name']}:{seed}:{k}")
                    batches = [_to(collate([shots[i] for i in b], pad), device)
                               for b in draw_batches(rng, len(shots), inner.steps, inner.batch_size)]
                    torch.manual_seed(spec.seed)
                    adapt(net, params, batches, inner.learning_rate)
                    after, exact_after = _loss(net, test, pad, device)
                    row = {"task": task["name"], "shots": k, "seed": int(seed), "model": name,
                           "loss_before": before, "loss_after": after, "exact_before": exact_before,
                           "exact_after": exact_after}
                    if answerable:
                        row.update(accuracy_before=acc_before, accuracy=_accuracy(net, tok, questions, spec),
                                   answered_rows=len(questions[1]))
                    if questions is not None:
                        row["rows_without_reference_answer"] = questions[2]
                    with torch.no_grad():
                        for p, s in zip(params, snapshot):
                            p.copy_(s)
                    out.append(row)
            log(f"few-shot {name} {task['name']}: test loss {before:.4f} -> "
                + ", ".join(f"{k}-shot {statistics.mean(r['loss_after'] for r in out if r['model'] == name and r['task'] == task['name'] and r['shots'] == k):.4f}"
                            for k in fs.shots))
        del net
    return out


def summarise(rows: list[dict]) -> dict[str, Any]:
    """Per model and k: mean and spread (stdev over tasks x seeds) of the loss after adaptation and of
    the gain (before - after); `by_task`: the same per task (spread over seeds); `best` per k: the model
    with the lowest mean loss after; `paired`: every other model against it (`paired`); `verdict`: a
    sentence per k saying which adapts best and whether its margin is outside the paired spread."""
    by: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        by.setdefault((r["model"], r["shots"]), []).append(r)
    table = []
    for (m, k), rs in by.items():
        after = [r["loss_after"] for r in rs]
        gain = [r["loss_before"] - r["loss_after"] for r in rs]
        entry = {"model": m, "shots": k, "n": len(rs),
                 "loss_before": statistics.mean(r["loss_before"] for r in rs),
                 "loss_after": statistics.mean(after), "loss_after_sd": _sd(after),
                 "gain": statistics.mean(gain), "gain_sd": _sd(gain)}
        if all("exact_after" in r for r in rs):
            exact = [r["exact_after"] for r in rs]
            entry.update(exact_before=statistics.mean(r["exact_before"] for r in rs),
                         exact_after=statistics.mean(exact), exact_after_sd=_sd(exact))
        answered = [r for r in rs if "accuracy" in r]     # tasks whose test rows have answers to match
        if answered:
            acc = [r["accuracy"] for r in answered]
            entry.update(accuracy_n=len(answered), accuracy_before=statistics.mean(r["accuracy_before"] for r in answered),
                         accuracy=statistics.mean(acc), accuracy_sd=_sd(acc))
        table.append(entry)
    per_task = []
    for key in sorted({(r["task"], r["shots"], r["model"]) for r in rows}):
        rs = [r for r in rows if (r["task"], r["shots"], r["model"]) == key]
        after = [r["loss_after"] for r in rs]
        per_task.append({"task": key[0], "shots": key[1], "model": key[2], "seeds": len(rs),
                         "loss_before": rs[0]["loss_before"], "loss_after": statistics.mean(after),
                         "loss_after_sd": _sd(after)})
    best, sentences, pairs_ = {}, [], []
    for k in sorted({t["shots"] for t in table}):
        rs = sorted((t for t in table if t["shots"] == k), key=lambda t: t["loss_after"])
        best[str(k)] = rs[0]["model"]
        pairs_ += [paired(rows, k, rs[0]["model"], t["model"]) for t in rs[1:]]
        sentences.append(_verdict(k, rs, pairs_[-len(rs) + 1] if len(rs) > 1 else None)
                         + _unadapted(rows, k, rs))
    return {"table": table, "by_task": per_task, "best": best, "verdict": sentences, "paired": pairs_}


def paired(rows: list[dict], k: int, a: str, b: str) -> dict[str, Any]:
    """Model a minus model b at k shots, paired by (task, seed): the mean difference of the loss after
    adaptation (and of the accuracy, where answers are matched) and its standard error. Tasks differ in
    difficulty far more than models do, so the unpaired spread hides a difference every pair shows."""
    at = {(r["task"], r["seed"]): r for r in rows if r["model"] == a and r["shots"] == k}
    bt = {(r["task"], r["seed"]): r for r in rows if r["model"] == b and r["shots"] == k}
    keys = sorted(at.keys() & bt.keys())
    out: dict[str, Any] = {"shots": k, "a": a, "b": b, "n": len(keys)}
    for key in ("loss_after", "exact_after", "accuracy"):
        d = [at[x][key] - bt[x][key] for x in keys if key in at[x] and key in bt[x]]
        if d:
            se = _sd(d) / len(d) ** 0.5
            out[key] = {"mean_diff": statistics.mean(d), "se": se, "n": len(d),
                        "clear": abs(statistics.mean(d)) > 2 * se}
    return out


def _unadapted(rows: list[dict], k: int, rs: list[dict]) -> str:
    """A clause when some model *before* adapting beats the best model after it: then the shots did not
    pay, whoever adapts best (an SFT control can fit the family well and be thrown off by an inner rate
    chosen for the starting model). Paired by task and seed, as the verdict."""
    still = min(rs, key=lambda t: t["loss_before"])
    if still["loss_before"] >= rs[0]["loss_after"]:
        return ""
    before = {(r["task"], r["seed"]): r["loss_before"] for r in rows if r["model"] == still["model"] and r["shots"] == k}
    d = [r["loss_after"] - before[(r["task"], r["seed"])] for r in rows
         if r["model"] == rs[0]["model"] and r["shots"] == k and (r["task"], r["seed"]) in before]
    se = _sd(d) / len(d) ** 0.5
    return (f"; but {still['model']} without adapting is lower still ({still['loss_before']:.4f}; "
            f"{rs[0]['model']} after minus it {statistics.mean(d):+.4f} ± {se:.4f}, paired): "
            f"adapting with {k} shots did not pay")


def _verdict(k: int, rs: list[dict], pair: dict | None) -> str:
    """One sentence: which model adapts best at k and whether the margin over the next is outside the
    spread (paired by task and seed: more than twice its standard error)."""
    if pair is None:
        return f"{k}-shot: only {rs[0]['model']} was evaluated"
    d = pair["loss_after"]
    sure = ("outside the spread (paired by task and seed: more than twice its standard error)" if d["clear"] else
            "within the spread (paired by task and seed: not more than twice its standard error), not a clear win")
    acc = pair.get("exact_after")
    acc_text = f"; exact match {acc['mean_diff']:+.1%} ± {acc['se']:.1%}" if acc else ""
    return (f"{k}-shot: {rs[0]['model']} adapts best, test loss {rs[0]['loss_after']:.4f} after adaptation vs "
            f"{rs[1]['model']} {rs[1]['loss_after']:.4f}, a difference of {d['mean_diff']:+.4f} ± {d['se']:.4f} "
            f"over {d['n']} task-seed pairs{acc_text}: {sure}")


def answer(text: str, pattern: str) -> str | None:
    """The answer `pattern` finds in `text` (its first group, else the whole match), without the
    spaces and thousands commas a number may be written with; None when it finds none."""
    import re

    m = re.search(pattern, text)
    if m is None:
        return None
    found = m.group(1) if m.re.groups else m.group(0)
    return None if found is None else found.strip().replace(",", "")


def _questions(path: Path, pattern: str, spec: FewShotSpec, tok) -> tuple[list[list[int]], list[str], int]:
    """(prompt ids, reference answers, rows left out): the test rows whose reference response has an answer."""
    from ..chat import chat_name
    from ..chat.templates import render_prompt
    from ..data.io import read_jsonl

    prompts, refs, missing = [], [], 0
    for row in read_jsonl(path):
        ref = answer(row["messages"][-1]["content"], pattern)
        if ref is None:
            missing += 1
            continue
        prompts.append(render_prompt(row["messages"][:-1], tok, chat=chat_name(spec.template.chat, spec.base_dir),
                                     system=spec.template.system))
        refs.append(ref)
    return prompts, refs, missing


def _accuracy(net, tok, questions, spec: FewShotSpec) -> float:
    """Share of the prompts whose greedy answer matches the reference's."""
    import torch

    from ..chat import chat_name
    from ..chat.templates import stop_token_ids

    prompts, refs, _ = questions
    stops = stop_token_ids(chat_name(spec.template.chat, spec.base_dir), tok)
    device = next(net.parameters()).device
    right = 0
    net.eval()
    with torch.no_grad():
        for prompt, ref in zip(prompts, refs):
            ids = torch.tensor([prompt], device=device)
            out = net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=spec.few_shot_eval.answer_max_new_tokens, eos_token_id=stops,
                               pad_token_id=tok.pad_token_id)[0, ids.size(1):]
            right += answer(tok.decode(out, skip_special_tokens=True), spec.few_shot_eval.answer_pattern) == ref
    net.train()
    return right / len(prompts)


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _loss(net, rows, pad: int, device, batch_size: int = 8) -> tuple[float, float]:
    """(token-mean loss over all rows (each batch's mean weighted by its label tokens), exact match: the
    share of rows whose every label token, the end of the turn included, is the model's most likely next
    token given the reference before it, i.e. whose greedy answer is the reference, word for word, and
    stops there; from the same forward, so it costs nothing beside the loss)."""
    import torch

    from .meta_data import collate

    total, tokens, exact, counted = 0.0, 0, 0, 0
    net.eval()   # no dropout in the measurement
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = _to(collate(rows[i:i + batch_size], pad), device)
            labels = b["labels"][:, 1:]
            n = int((labels != -100).sum())
            if n:
                out = net(**b)
                total += float(out.loss) * n
                tokens += n
                hit = (out.logits[:, :-1].argmax(-1) == labels) | (labels == -100)
                has = (labels != -100).any(-1)
                exact += int((hit.all(-1) & has).sum())
                counted += int(has.sum())
    net.train()
    return total / max(tokens, 1), exact / max(counted, 1)
