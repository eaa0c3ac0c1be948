"""Loading the model and tokenizer named by `model.base`.

`model.base` is one of:
  - `builtin:tiny`: a 4-layer Qwen2 (d=192, ~3.2M parameters) pretrained by this project on the public
    corpora in data/ (recipes/tiny_pretrain.yaml, `make tiny-model`); weights and manifest in tiny/.
    Without tiny/model.safetensors (a checkout that has not built it) it is tiny-scratch.
  - `builtin:tiny-scratch`: the same architecture, randomly initialised (seeded): where
    pretraining starts.
  - `builtin:tiny-random`: a 2-layer random Qwen2 (~0.5M parameters, config in tiny_random/):
    fast plumbing tests where learning does not matter.
  - a local directory, relative to the recipe's directory;
  - a hub id, taken from the local Hugging Face cache first and the hub only if reachable.
All builtin models share the byte-level BPE tokenizer in tiny/ (rebuilt by runner/tools/make_tokenizer.py), so
every recipe runs offline.

torch and transformers are imported inside the functions, so importing this module (runner.chat
does, to name a tokenizer) stays light; only the steps that load a model pay for them.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from runner.errors import RecipeError

TINY = "builtin:tiny"
TINY_SCRATCH = "builtin:tiny-scratch"
TINY_RANDOM = "builtin:tiny-random"
BUILTINS = (TINY, TINY_SCRATCH, TINY_RANDOM)
WEIGHTS = "model.safetensors"

_DTYPES = {
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16",
}


def tiny_path() -> Path:
    """The directory holding the tiny model's config and tokenizer files."""
    return Path(__file__).resolve().parent / "tiny"


def builtin_config_dir(base: str) -> Path:
    """The directory holding the config of a builtin model."""
    return tiny_path().parent / "tiny_random" if base == TINY_RANDOM else tiny_path()


def builtin_weights(base: str) -> Path | None:
    """The shipped weights of a builtin model, None where it is randomly initialised."""
    weights = tiny_path() / WEIGHTS
    return weights if base == TINY and weights.is_file() else None


def weights_digest(base: str) -> str | None:
    """sha256 of a builtin model's shipped weights, from its manifest (cheap: no torch, no hashing),
    None for random-init models. Fingerprints include it, so new weights retrain what used the old."""
    import json

    if builtin_weights(base) is None:
        return None
    manifest = tiny_path() / "manifest.json"
    return json.loads(manifest.read_text(encoding="utf-8"))["weights_sha256"] if manifest.is_file() else None


def load_tokenizer(base: str, *, trust_remote_code: bool = False, recipe_dir: Path | None = None):
    """The tokenizer for `base` (no model weights: data steps only need this)."""
    if base in BUILTINS:
        # the class AutoTokenizer would pick (tokenizer_config.json), named: the auto classes import torch
        # (~2.5 s), which a dry run never needs otherwise (transformers 5.25; at 5.17 this module imports it)
        from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
        return Qwen2Tokenizer.from_pretrained(tiny_path())
    from transformers import AutoTokenizer

    return _load(AutoTokenizer.from_pretrained, base, recipe_dir, trust_remote_code=trust_remote_code)


def load_model_and_tokenizer(
    base: str,
    *,
    seed: int,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    recipe_dir: Path | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) for `base`. `seed` fixes every randomly initialised weight: all
    of builtin:tiny, and any head a checkpoint lacks."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code, recipe_dir=recipe_dir)
    # Seed a forked RNG: loading must not shift the caller's random stream (data order,
    # dropout), or adding a load would change a run's results.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if base in BUILTINS:
            # "auto" means the checkpoint's dtype; the shipped weights are float32, random ones have none.
            torch_dtype = getattr(torch, "float32" if dtype == "auto" else _dtype_name(dtype))
            weights = builtin_weights(base)
            if weights is not None:
                model = AutoModelForCausalLM.from_pretrained(str(weights.parent), dtype=torch_dtype)
            else:
                config = AutoConfig.from_pretrained(builtin_config_dir(base))
                model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        else:
            model = _load(
                AutoModelForCausalLM.from_pretrained, base, recipe_dir,
                dtype="auto" if dtype == "auto" else getattr(torch, _dtype_name(dtype)),
                trust_remote_code=trust_remote_code,
            )
    return model, tokenizer


def _dtype_name(dtype: str) -> str:
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise RecipeError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def _load(from_pretrained: Callable, base: str, recipe_dir: Path | None, **kwargs):
    """from_pretrained on a local directory, else on a hub id, turning every way that
    fails into one RecipeError line."""
    local = _local_dir(base, recipe_dir)
    if local is not None:
        try:
            return from_pretrained(str(local), **kwargs)
        except (OSError, ValueError) as e:
            raise RecipeError(f"cannot load model {base!r} from {local}: {_first_line(e)}") from e

    # The cache first: a pre-populated HF_HOME works with no network at all.
    try:
        return from_pretrained(base, local_files_only=True, **kwargs)
    except OSError:
        pass
    if _offline() or not _hub_reachable():
        # Checked up front because the hub client retries for ~25 s before giving up.
        raise RecipeError(
            f"model {base!r} is not in the local Hugging Face cache and the hub cannot be "
            f"reached; use --set model.base={TINY}, a local model directory, or an HF_HOME "
            f"cache that already holds it"
        )
    try:
        return from_pretrained(base, **kwargs)
    except OSError as e:
        raise RecipeError(
            f"cannot load model {base!r} from the hub ({_first_line(e)}); "
            f"use --set model.base={TINY} or a local model directory"
        ) from e


def _local_dir(base: str, recipe_dir: Path | None) -> Path | None:
    """The directory `base` names, None if it reads as a hub id ("name" or "org/name")."""
    path = Path(base).expanduser()
    if not path.is_absolute():
        path = (recipe_dir or Path.cwd()) / path
    if path.exists():
        return path
    looks_like_path = base.startswith((".", "/", "~")) or base.count("/") > 1 or "\\" in base
    if looks_like_path:
        raise RecipeError(f"model path {base!r} does not exist (looked for {path})")
    return None


def _offline() -> bool:
    # Read the environment now: huggingface_hub reads it once, at import.
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens. Behind a proxy we cannot tell, so we
    assume yes and let the hub client decide."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
