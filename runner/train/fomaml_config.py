"""Configuration of the FOMAML trainer: SFT's settings plus the inner loop. The outer loop is the
ordinary optimizer (`learning_rate`, `optim`, schedule, clipping), so it needs no fields of its own."""
from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig


@dataclass
class FOMAMLConfig(SFTConfig):
    """SFTConfig for [`FOMAMLTrainer`].

    One training item is one process's share of a meta-batch (`{"tasks": [{"support": [batch, ...],
    "query": batch}, ...]}`), so `per_device_train_batch_size` is always 1 and the meta-batch size is
    tasks per item x processes x `gradient_accumulation_steps`. `learning_rate` is the outer (meta)
    learning rate.

    Parameters:
        inner_learning_rate (`float`, defaults to `1e-4`):
            Step size of the inner SGD steps on the support batches (0 turns FOMAML into multi-task
            training on the query batches).
        adaptation_log_steps (`int`, defaults to `0`):
            Every this many optimizer steps, also measure the query loss at the un-adapted parameters,
            so the log shows the adaptation gain (one extra forward per task); 0 uses `logging_steps`.
    """

    inner_learning_rate: float = field(default=1e-4, metadata={"help": "Inner-loop SGD step size."})
    adaptation_log_steps: int = field(default=0, metadata={"help": "Steps between adaptation-gain measurements."})

    def __post_init__(self):
        if self.per_device_train_batch_size != 1:
            # an item already is a whole meta-batch share; a batch of items has no meaning
            raise ValueError("FOMAMLConfig: per_device_train_batch_size must be 1 (one item = one process's "
                             "share of a meta-batch)")
        # Trainer would drop the `tasks` key as an unknown model input, and TRL would tokenize it
        self.remove_unused_columns = False
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        super().__post_init__()
        if self.inner_learning_rate < 0:
            raise ValueError("FOMAMLConfig: inner_learning_rate must be >= 0")
        if self.activation_checkpointing:
            # Reentrant checkpointing hides the parameters from `torch.autograd.grad`: the inner
            # gradients come back as None and the inner loop would silently do nothing.
            kwargs = dict(self.activation_checkpointing_kwargs or {})
            if kwargs.get("use_reentrant"):
                raise ValueError("FOMAMLConfig: activation checkpointing must be non-reentrant "
                                 "(use_reentrant=False): with reentrant checkpointing the inner-loop "
                                 "gradients are None")
            kwargs["use_reentrant"] = False
            self.activation_checkpointing_kwargs = kwargs
