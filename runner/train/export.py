"""Export what a run produced, in the formats other tools load:

  out_dir/adapter/   the LoRA adapter + tokenizer    PeftModel.from_pretrained(base, out_dir/"adapter")
  out_dir/merged/    with output.merge: the adapter merged into the base weights + tokenizer
                                                     AutoModelForCausalLM.from_pretrained(out_dir/"merged")
  out_dir/model/     with adapter.type none: the full model + tokenizer
  out_dir/export_manifest.json   what was exported, from which base, trained on which data
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .spec import ExportSpec

# training-only files that do not belong in an export: a pickle of the Trainer's arguments, the
# EWC anchor, and TRL's auto-generated model card
_SKIP = {"training_args.bin", "ewc_state.safetensors", "README.md"}


def export(spec: ExportSpec, final_dir: str | Path, out_dir: str | Path, *, fingerprint: str,
           stage: str | None = None, merge: bool | None = None, trust: bool = False,
           secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Export a stage's final/ directory into out_dir; returns the manifest. `fingerprint` names
    the data that trained it; `merge` defaults to output.merge."""
    from .loading import for_inference, is_adapter

    final_dir, out_dir = Path(final_dir), Path(out_dir)
    merge = spec.merge if merge is None else merge
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter = is_adapter(final_dir)
    exported: dict[str, str] = {}

    kind = "adapter" if adapter else "model"
    _copy(final_dir, out_dir / kind)
    exported[kind] = kind
    if adapter and merge:
        net, tokenizer = for_inference(spec, final_dir, trust=trust)
        merged = net.merge_and_unload()
        merged.save_pretrained(out_dir / "merged")
        tokenizer.save_pretrained(out_dir / "merged")
        exported["merged"] = "merged"

    manifest = {
        "recipe": spec.recipe,
        "stage": stage,
        "base": spec.model.base,
        "seed": spec.seed,         # builtin:tiny's base weights are this seed's random init
        "adapter": _adapter_type(final_dir) if adapter else "none",
        "exported": exported,
        "data_fingerprint": fingerprint,
        "versions": _versions(),
    }
    from ..recipe.secrets import redact
    manifest = redact(manifest, secrets, numbers=False)[0]   # a base named by a value from the environment: ***
    (out_dir / "export_manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def _adapter_type(final_dir: Path) -> str:
    """The saved adapter's kind as a recipe names it (peft writes "LORA")."""
    return json.loads((final_dir / "adapter_config.json").read_text()).get("peft_type", "lora").lower()


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in _SKIP:
            shutil.copy2(f, dst / f.name)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "trl")}
