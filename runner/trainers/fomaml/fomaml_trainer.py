"""First-order MAML as a `transformers.Trainer` whose `training_step` is a meta-step share.

theta = the trainable parameters. For each task of an item: K inner SGD steps of size alpha on the
support batches give theta'; the query loss at theta' is back-propagated through the ordinary
accelerate backward; theta is put back. The gradients of all tasks of all items of one optimizer step
add up to the mean over the meta-batch of grad L_query(theta'), and Trainer's optimizer step applies
it to theta. Everything else (optimizer, schedule, clipping, checkpoints, DDP, DeepSpeed ZeRO-1/2,
AMP) is Trainer's.

Why it is written the way it is (each is a bug that raises no error when done the other way):
- The inner loop takes `torch.autograd.grad` on the *unwrapped* model (no DDP/DeepSpeed gradient hooks
  fire, nothing lands in .grad) and steps an fp32 copy of theta': in bf16 most inner updates round
  away. The forward then runs on theta' rounded to the parameters' dtype.
- theta is restored *after* the query backward: autograd keeps some parameters themselves as saved
  tensors (an RMSNorm weight multiplies the normalised input), so restoring before the backward
  computes the query gradient partly at theta: wrong, silently.
- Only the last task of the last item of an optimizer step synchronises gradients. Under DeepSpeed,
  accelerate steps the optimizer inside `backward` at the accumulation boundary, i.e. while theta'
  is still in the weights; so every task backward runs off the boundary and one extra boundary
  backward (of a zero loss) follows once theta is back.
- Reentrant activation checkpointing makes `autograd.grad` return None for every parameter: refused
  by FOMAMLConfig, and an inner step whose gradients are all None raises.
"""
from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from typing import Any

import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer
from transformers.utils import is_peft_available

from ...train.inner_loop import adapt, batch_loss, trainable
from .fomaml_config import FOMAMLConfig, checkpointing_field

log = logging.getLogger(__name__)


def collate_item(features: list[dict]) -> dict:
    """The collator: a batch is exactly one item. `input_ids`/`attention_mask` at the top level are
    every sequence of the item flattened, only for Trainer's token count and FLOP estimate."""
    if len(features) != 1:
        raise ValueError("FOMAMLTrainer: one item per batch (per_device_train_batch_size=1)")
    item = features[0]
    batches = [b for t in item["tasks"] for b in (*t["support"], t["query"])]
    return {"tasks": item["tasks"],
            "input_ids": torch.cat([b["input_ids"].reshape(-1) for b in batches]),
            "attention_mask": torch.cat([b["attention_mask"].reshape(-1) for b in batches])}


class FOMAMLTrainer(Trainer):
    """First-order MAML over task items; see the module docstring and the README for the item format.

    Args:
        model: a causal LM (returns `.loss` given `labels`), or a peft model.
        args ([`FOMAMLConfig`]): `learning_rate` is the outer learning rate.
        train_dataset: items `{"tasks": [{"support": [batch, ...], "query": batch}, ...]}`, each batch a
            dict of `input_ids`, `attention_mask`, `labels` tensors. Items are consumed in order; one
            optimizer step takes processes x gradient_accumulation_steps consecutive items.
        peft_config: a peft config to wrap `model` with (as SFTTrainer does).
        **kwargs: as for [`Trainer`].
    """

    _name = "FOMAML"

    def __init__(self, model, args: FOMAMLConfig, train_dataset, processing_class=None, peft_config=None,
                 **kwargs):
        if not isinstance(args, FOMAMLConfig):
            raise TypeError("FOMAMLTrainer needs a FOMAMLConfig")
        if peft_config is not None:
            from peft import get_peft_model
            model = get_peft_model(model, peft_config)
        if getattr(args, checkpointing_field(args)) and is_peft_available():
            from peft import PeftModel
            if isinstance(model, PeftModel):
                model.enable_input_require_grads()   # frozen embeddings: checkpoint inputs need grad
        kwargs.setdefault("data_collator", collate_item)
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         **kwargs)
        plugin = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        if plugin is not None and plugin.zero_stage == 3:
            raise ValueError("FOMAMLTrainer: DeepSpeed ZeRO-3 partitions the parameters, and the inner loop needs "
                             "them whole on every process; use ZeRO-1 or ZeRO-2")
        self._meta_metrics: dict[str, list[float]] = defaultdict(list)
        self._warned = False

    def _get_train_sampler(self, train_dataset=None):
        # An item is a seeded draw for (meta-step, slot): order is the meta-batch structure, so the
        # items are consumed as they are (accelerate deals them out round-robin across processes)
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def get_batch_samples(self, epoch_iterator, num_batches, *args, **kwargs):
        # An item's share of the mean is its tasks over the meta-batch's tasks, which only the whole
        # optimizer step knows: items of 3 and 1 tasks scaled per item would weigh 1/6 and 1/2, not 1/4
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, *args, **kwargs)
        count = torch.tensor(sum(len(b["tasks"]) for b in batches), device=self.args.device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return batches, count

    def training_step(self, model, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        model.train()
        tasks = self._prepare_inputs(inputs)["tasks"]
        net = self.accelerator.unwrap_model(model)
        params = trainable(net)
        theta = [p.detach().clone() for p in params]
        deepspeed = self.is_deepspeed_enabled
        boundary = self.accelerator.sync_gradients
        # each task's share of the mean over the meta-batch's tasks (all processes: DDP and DeepSpeed
        # average over processes); called outside Trainer's loop, an item of the usual size is assumed
        if num_items_in_batch is not None:
            scale = float(num_items_in_batch) / self.args.world_size
        else:
            scale = len(tasks) * self.current_gradient_accumulation_steps
        kwargs = {"scale_wrt_gas": False} if deepspeed else {}
        every = self.args.adaptation_log_steps or self.args.logging_steps
        measure_gain = every > 0 and self.state.global_step % every == 0
        total = torch.zeros((), device=self.args.device)
        try:
            for i, task in enumerate(tasks):
                if measure_gain:
                    with torch.no_grad(), self.compute_loss_context_manager():
                        before = batch_loss(net, task["query"]).float().item()
                support, _ = adapt(net, params, task["support"], self.args.inner_learning_rate,
                                   autocast=self.compute_loss_context_manager)
                sync = boundary and i == len(tasks) - 1 and not deepspeed
                if deepspeed:
                    self.accelerator.gradient_state._set_sync_gradients(False)
                with contextlib.nullcontext() if sync or deepspeed else self.accelerator.no_sync(model):
                    with self.compute_loss_context_manager():
                        query = batch_loss(model, task["query"])
                    self.accelerator.backward(query / scale, **kwargs)
                _restore(params, theta)   # after the backward: see the module docstring
                total += query.detach() / scale
                m = self._meta_metrics
                if support:
                    m["support_loss_first"].append(support[0])
                if len(support) > 1:
                    m["support_loss_last"].append(support[-1])
                m["query_loss"].append(query.detach().float().item())
                if measure_gain:
                    m["adaptation_gain"].append(before - m["query_loss"][-1])
        finally:
            _restore(params, theta)
            if deepspeed:
                self.accelerator.gradient_state._set_sync_gradients(boundary)
        if deepspeed and boundary:
            # the optimizer step, now that theta is back: a backward that adds nothing
            zero = sum((p * 0).sum() for p in params)
            self.accelerator.backward(zero, **kwargs)
        # summed over the accumulation steps, Trainer logs the meta-batch's mean query loss
        return total

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        m, self._meta_metrics = self._meta_metrics, defaultdict(list)
        if self.model.training and m:
            for key, values in m.items():
                logs[key] = sum(values) / len(values)
            first, last = logs.get("support_loss_first"), logs.get("support_loss_last")
            if (first is not None and last is not None and last >= first and self.args.inner_learning_rate > 0
                    and self.is_world_process_zero() and not self._warned):
                self._warned = True   # once per run: the log has the numbers for every logged step
                log.warning("FOMAML step %d: the support loss does not fall in the inner loop (%.4f at the first "
                            "inner step, %.4f at the last): the inner learning rate may be too high or too "
                            "low for these tasks (said once; see support_loss_* in the log)", self.state.global_step, first, last)
        super().log(logs, start_time)


def _restore(params, theta) -> None:
    with torch.no_grad():
        for p, t in zip(params, theta):
            p.copy_(t)
