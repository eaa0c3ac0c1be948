"""The SFT trainer: TRL's SFTTrainer, with an elastic-weight-consolidation penalty toward the previous
stages' parameters (EwcTrainer) and/or the model's own loss when peft wraps the LM head
(PlainHeadSFTTrainer). Each changes only `compute_loss`; everything else (data, packing, DeepSpeed,
checkpoints) is SFTTrainer's. `trainer_class` picks the combination a stage needs."""
from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer

from ...train.ewc import EwcState


class EwcTrainer(SFTTrainer):
    """[`SFTTrainer`] whose training loss adds `args.ewc_lambda / 2 * sum F (theta - theta*)^2`.

    Args:
        ewc_state ([`EwcState`]): the Fisher diagonal and theta* of the earlier stages.
        *args, **kwargs: as for [`SFTTrainer`]; `args` is an [`EwcConfig`].
    """

    _name = "EWC"

    def __init__(self, *args, ewc_state: EwcState, **kwargs):
        super().__init__(*args, **kwargs)
        ewc_state.check(self.model)
        self.ewc_state = ewc_state

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                   num_items_in_batch=num_items_in_batch)
        if not self.model.training or self.args.ewc_lambda == 0:
            return out
        # `self.model` is the unwrapped model (under DeepSpeed or DDP `model` is the wrapper), so the
        # parameter names match the ones the state was saved with
        penalty = self.args.ewc_lambda / 2 * self.ewc_state.penalty(self.model)
        self._metrics["train"]["ewc_penalty"].append(penalty.item())
        # The penalty belongs to the optimizer step, not to each micro-batch. When the SFT loss is
        # already normalised over the whole accumulated batch (by `num_items_in_batch`), Trainer
        # adds the micro-batch losses as they are, so each carries 1/steps of the penalty;
        # otherwise Trainer divides every micro-batch loss by the steps itself.
        if not self._trainer_divides_by_accumulation(num_items_in_batch):
            penalty = penalty / self.current_gradient_accumulation_steps
        if return_outputs:
            loss, outputs = out
            return loss + penalty, outputs
        return out + penalty

    def _trainer_divides_by_accumulation(self, num_items_in_batch) -> bool:
        # the rule of `Trainer.training_step` (the attribute since transformers 5.19, the rule before)
        scaled = getattr(self, "loss_is_scaled_for_ga", None)   # Trainer has it from transformers 5.19
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) \
                or self.compute_loss_func is not None
        return not scaled


class PlainHeadSFTTrainer(SFTTrainer):
    """SFT whose loss is the model's own, for a model whose LM head peft has wrapped (adapter.trainable_tokens
    on tied embeddings). TRL's fused LM head reads `lm_head.weight` and `lm_head.bias` directly, which a
    wrapped head does not offer with its trainable rows applied: the loss would ignore them, or fail. TRL's
    entropy and token-accuracy metrics, which come from the fused head, are not logged."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


class CompileCountingSFTTrainer(SFTTrainer):
    """SFTTrainer that counts what torch.compile compiled while training (the run's `recompiles`): a graph
    compiled for a micro batch whose shape an earlier micro batch already had is a recompile; the
    first graph(s) of each new shape are not. Counted around the forward pass, where compilation
    happens; without torch_compile nothing is counted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shapes_seen: set[tuple[int, ...]] = set()
        self.compiled_graphs = 0
        self.recompiles = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.args.torch_compile:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        from torch._dynamo.utils import counters

        shape = tuple(inputs["input_ids"].shape)
        before = counters["stats"]["unique_graphs"]
        out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                   num_items_in_batch=num_items_in_batch)
        new = counters["stats"]["unique_graphs"] - before
        self.compiled_graphs += new
        if shape in self.shapes_seen:
            self.recompiles += new
        self.shapes_seen.add(shape)
        return out


def trainer_class(*, ewc: bool, wraps_lm_head: bool) -> type:
    """SFTTrainer counting its compiles, with EWC's penalty and/or the model's own loss (trainable token
    rows wrap the LM head)."""
    bases = ([EwcTrainer] if ewc else []) + ([PlainHeadSFTTrainer] if wraps_lm_head else [])
    if not bases:
        return CompileCountingSFTTrainer
    name = "".join(b.__name__.removesuffix("SFTTrainer").removesuffix("Trainer") for b in bases) + "SFTTrainer"
    return type(name, (*bases, CompileCountingSFTTrainer), {})
