"""SFT whose loss is the model's own, for a model whose LM head peft has wrapped (adapter.trainable_tokens
on tied embeddings). TRL's fused LM head reads `lm_head.weight` and `lm_head.bias` directly, which a
wrapped head does not offer with its trainable rows applied: the loss would ignore them, or fail. Only
`compute_loss` changes; TRL's entropy and token-accuracy metrics, which come from the fused head, are
not logged."""
from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer


class PlainHeadSFTTrainer(SFTTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
