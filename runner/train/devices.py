"""What this machine supports for a recipe's `train:`: the precision `auto` means here, and whether
the kernels it asks for can run."""
from __future__ import annotations

from ..errors import RecipeError
from ..recipe import model


def precision(train: model.Train) -> str:
    """'bf16', 'fp16' or 'fp32'. `auto` is bf16 where CUDA supports it, else fp32: CPU autocast in
    bf16 is slower than fp32 and fp16 on CPU is not a thing we run."""
    import torch

    cuda = torch.cuda.is_available()
    if train.precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if train.precision == "fp16" and not cuda:
        raise RecipeError("train.precision fp16 needs a CUDA device; use auto, fp32 or bf16 on CPU")
    return train.precision


def check_kernels(train: model.Train) -> None:
    """Liger's kernels are Triton kernels: CUDA only, from a package we do not require."""
    if not train.use_liger_kernel:
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise RecipeError("train.use_liger_kernel needs a CUDA device (Liger's kernels are Triton kernels); "
                          "set it to false on this machine")
    if importlib.util.find_spec("liger_kernel") is None:
        raise RecipeError("train.use_liger_kernel needs the liger-kernel package: pip install liger-kernel")
