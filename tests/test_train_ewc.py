"""EWC: the Fisher and its online accumulation, the penalty once per optimizer step whatever the
gradient accumulation, and the pull toward theta* across chained stages."""
import dataclasses

import pytest
import torch
from helpers import train as F
from transformers import TrainerCallback

from runner.train import loading
from runner.train import rows as R
from runner.steps.train import fisher_for
from runner.train.ewc import EWC_FILE, EwcState, consolidate, estimate_fisher
from runner.trainers.sft.driver import train as train_stage
from runner.trainers.sft.sft_config import to_sft_config
from runner.train.spec import Fisher


def _grads_after_one_step(tmp_path, *, micro: int, lam: float) -> tuple[dict, dict, EwcState]:
    """Gradients at the first optimizer step (after accumulation, before the update), with a
    known anchor: theta* = -0.01 everywhere and an uneven Fisher."""
    from peft import get_peft_model
    from transformers import set_seed

    from runner.trainers.sft.sft_trainer import EwcTrainer

    r = F.recipe(tmp_path, f"train.micro_batch_size={micro}", "train.max_steps=1", "train.max_grad_norm=1.0e+9",
                 extra=F.STAGES)
    net, tok, lora = loading.for_training(F.spec(r), None)
    set_seed(r.seed)                                   # the same LoRA init in every call
    net = get_peft_model(net, lora)
    trainable = sorted((n, p) for n, p in net.named_parameters() if p.requires_grad)
    state = EwcState(fisher={n: 1.0 + i + torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) % 3
                             for i, (n, p) in enumerate(trainable)},
                     anchor={n: torch.full(p.shape, -0.01) for n, p in trainable}, stages=["s"])
    args = to_sft_config(F.spec(r, "second"), tmp_path / f"ckpt{micro}{lam}")
    args.ewc_lambda = lam
    grads, params = {}, {}

    class Grab(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            for n, p in model.named_parameters():
                if p.requires_grad:
                    grads[n], params[n] = p.grad.clone(), p.detach().clone()

    rows = R.dataset(R.pairs(F.rows(tmp_path / "t.jsonl")))
    trainer = EwcTrainer(model=net, args=args, train_dataset=rows, processing_class=tok, ewc_state=state,
                         callbacks=[Grab()])
    assert trainer.args.gradient_accumulation_steps == 4 // micro
    trainer.train()
    return grads, params, state


def test_penalty_once_per_optimizer_step_under_accumulation(tmp_path):
    lam = 50.0
    g1, theta, state = _grads_after_one_step(tmp_path, micro=4, lam=lam)      # accumulation 1
    g2, theta2, _ = _grads_after_one_step(tmp_path, micro=2, lam=lam)         # accumulation 2, same rows
    g2_data, _, _ = _grads_after_one_step(tmp_path, micro=2, lam=0.0)
    assert all(torch.equal(theta[n], theta2[n]) for n in theta)
    for n in g1:
        expected_penalty = lam * state.fisher[n] * (theta[n] - state.anchor[n])   # d/dθ λ/2 F (θ-θ*)²
        torch.testing.assert_close(g2[n] - g2_data[n], expected_penalty, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-4, atol=1e-6)


def test_fisher_is_normalised_and_accumulates_online(tmp_path):
    r = F.recipe(tmp_path, extra=F.STAGES)
    net, tok, lora = loading.for_training(F.spec(r), None)
    from peft import get_peft_model
    net = get_peft_model(net, lora)
    pairs = R.pairs(F.rows(tmp_path / "t.jsonl"))
    fisher = estimate_fisher(net, pairs, samples=8, seed=0)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert set(fisher) == trainable
    flat = torch.cat([f.flatten() for f in fisher.values()])
    assert flat.mean().item() == pytest.approx(1.0) and (flat >= 0).all() and flat.dtype == torch.float32
    again = estimate_fisher(net, pairs, samples=8, seed=0)                          # seeded row choice
    assert all(torch.equal(fisher[n], again[n]) for n in fisher)

    first = consolidate(None, net, fisher, gamma=0.5, stage="first")
    second = consolidate(first, net, fisher, gamma=0.5, stage="second")
    for n in fisher:
        torch.testing.assert_close(second.fisher[n], 1.5 * fisher[n])          # 0.5 * F + F
    second.save(tmp_path / EWC_FILE)
    back = EwcState.load(tmp_path / EWC_FILE)
    assert back.stages == ["first", "second"]
    assert all(torch.equal(back.fisher[n], second.fisher[n]) and torch.equal(back.anchor[n], second.anchor[n])
               for n in fisher)


def test_successor_stage(tmp_path):
    r = F.recipe(tmp_path, extra=F.STAGES)
    ewc = r.stage("second").ewc
    # what of the next stage's ewc shapes the Fisher: its rows and decay, not lambda
    assert fisher_for(r, r.stage("first")) == Fisher(fisher_samples=ewc.fisher_samples, gamma=ewc.gamma)
    assert fisher_for(r, r.stage("second")) is None
    assert F.spec(r, "first").fisher_for == fisher_for(r, r.stage("first")) and F.spec(r, "first").ewc is None
    assert F.spec(r, "second").ewc == r.stage("second").ewc and F.spec(r, "second").fisher_for is None


def test_penalty_pulls_toward_the_previous_stage(tmp_path):
    r = F.recipe(tmp_path, "train.learning_rate=0.01", extra=F.STAGES)
    a, b = F.rows(tmp_path / "a.jsonl"), F.rows(tmp_path / "b.jsonl", kind="b")
    train_stage(F.spec(r, "first"), a, tmp_path / "first", resume=False)
    first = tmp_path / "first" / "final"
    state = EwcState.load(first / EWC_FILE)            # written because "second" has ewc:
    assert state.stages == ["first"]

    def drift(lam: float) -> float:
        spec = F.spec(r, "second")
        spec = dataclasses.replace(spec, ewc=dataclasses.replace(spec.ewc, lambda_=lam))
        out = tmp_path / f"second_{lam}"
        train_stage(spec, b, out, init_from=first, resume=False)
        weights = F.adapter_weights(out / "final")
        keys = {k: k.replace(".weight", ".default.weight") for k in weights}   # saved vs in-memory names
        sq = {k: (weights[k] - state.anchor[keys[k]]).pow(2) for k in weights}
        # EWC holds parameters in proportion to their Fisher: measure the distance in that metric
        return (sum(float(v.sum()) for v in sq.values()) ** 0.5,
                sum(float((state.fisher[keys[k]] * v).sum()) for k, v in sq.items()) ** 0.5)

    (free, free_f), (held, held_f) = drift(0.0), drift(50.0)
    assert held < free and held_f < 0.3 * free_f, (held, free, held_f, free_f)
