"""Where a stage's weights come from, and how a trained stage is loaded back.

A stage's `final/` directory holds either a LoRA adapter (adapter_config.json + weights; the base
model is `model.base`) or, with `adapter.type: none`, a full model. Both come with the tokenizer.

Chained stages continue the *same* LoRA adapter rather than merging it into the base and starting
a new one: the adapter keeps its rank budget across stages, nothing is lost to merge rounding in
bf16, the artifacts stay small, and EWC's theta* and Fisher refer to the very parameters the next
stage trains. Only when the recipe's adapter settings differ from the saved adapter's do we merge
it and start a fresh adapter (EWC then refuses: its parameters no longer exist).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..recipe import model
from .spec import Spec


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_base(spec: Spec, *, trust: bool = False, base: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of `model.base` (or `base`), seeded with the recipe's seed."""
    from ..builtin import load_model_and_tokenizer

    # The run log shows our step lines; datasets' per-map progress bars and a transformers 5 deprecation
    # that peft triggers (not ours to fix) are noise there.
    import warnings

    import datasets
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    m = spec.model
    return load_model_and_tokenizer(base or m.base, seed=spec.seed, dtype=m.dtype,
                                    trust_remote_code=m.trust_remote_code and trust,
                                    recipe_dir=spec.base_dir)


def for_training(spec: Spec, init_from: str | Path | None, *, trust: bool = False
                 ) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config) to train a stage from `init_from` (a previous stage's
    final/ directory, an adapter or a full model) or from the base. peft_config is None when the
    model already carries the adapter to continue, or when the recipe trains all weights."""
    adapter = spec.model.adapter

    def new_adapter(tok):
        return lora_config(adapter, tok) if adapter.type == "lora" else None

    if init_from is None:
        m, tok = load_base(spec, trust=trust)
        return m, tok, new_adapter(tok)
    if not is_adapter(init_from):               # a full model directory
        m, tok = load_base(spec, trust=trust, base=str(Path(init_from).resolve()))
        return m, tok, new_adapter(tok)

    from peft import PeftModel

    base, tok = load_base(spec, trust=trust)
    fresh = new_adapter(tok)
    peft_model = PeftModel.from_pretrained(base, str(init_from), is_trainable=True)
    if fresh is not None and _same_adapter(init_from, fresh):
        return peft_model, tok, None             # continue the same adapter
    return peft_model.merge_and_unload(), tok, fresh


def for_inference(spec: Spec, model_dir: str | Path, *, trust: bool = False) -> tuple[Any, Any]:
    """A trained stage's (model, tokenizer), in eval mode."""
    if is_adapter(model_dir):
        from peft import PeftModel

        base, tok = load_base(spec, trust=trust)
        m = PeftModel.from_pretrained(base, str(model_dir))
    else:
        m, tok = load_base(spec, trust=trust, base=str(Path(model_dir).resolve()))
    return to_device(m).eval(), tok


def to_device(m):
    """Onto this process's GPU when there is one (the loader leaves weights on the CPU; Trainer
    moves them itself, but evaluation and the Fisher run outside Trainer)."""
    import os

    import torch

    if torch.cuda.is_available():
        return m.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return m


def _same_adapter(path: str | Path, config) -> bool:
    """Whether the adapter saved at `path` has the shape of the LoraConfig `config` (so training continues it)."""
    saved = json.loads((Path(path) / "adapter_config.json").read_text())
    return (saved.get("r") == config.r and float(saved.get("lora_alpha")) == float(config.lora_alpha)
            and set(saved.get("target_modules") or []) == set(config.target_modules)
            and _token_rows(saved.get("trainable_token_indices")) == _token_rows(config.trainable_token_indices))


def _token_rows(indices) -> list[int]:
    """peft keeps trainable_token_indices as a list, or {module: list} once it has chosen the layer."""
    if isinstance(indices, dict):
        indices = sorted({i for ids in indices.values() for i in ids})
    return sorted(indices or [])


def lora_config(adapter: model.Adapter, tokenizer=None):
    """peft LoraConfig for `model.adapter` (type lora); `tokenizer` names adapter.trainable_tokens' ids."""
    from peft import LoraConfig

    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=list(adapter.target_modules),
        trainable_token_indices=token_ids(adapter.trainable_tokens, tokenizer) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def token_ids(tokens, tokenizer) -> list[int]:
    """Each of `tokens` as the one id the tokenizer has for it; a text that is not one token is an error."""
    if not tokens:
        return []
    from ..recipe.validate import did_you_mean

    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        specials = [t for t in tokenizer.all_special_tokens]
        raise RecipeError(f"model.adapter.trainable_tokens: {missing[0]!r} is not one token of the model's tokenizer"
                          f"{did_you_mean(missing[0], specials)}; name tokens as the tokenizer writes them "
                          f"(its special tokens: {', '.join(specials)})")
    return [vocab[t] for t in tokens]
