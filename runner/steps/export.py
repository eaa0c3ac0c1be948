"""export: the last stage's adapter (and the merged model with output.merge) in formats that
AutoModelForCausalLM / PeftModel load, with the fingerprint of the data that trained it."""
from __future__ import annotations

import json
import shutil

VERSION = 1


def run(ctx) -> dict:
    from ..train.export import export
    (train_step,) = ctx.step.inputs
    art = ctx.input(train_step)
    components = json.loads((art / "manifest.json").read_text())["components"]
    stage = train_step.split(".", 1)[1]
    data_fp = components["inputs"].get(f"render.{stage}")
    manifest = export(ctx.recipe, art / "final", ctx.out, fingerprint=data_fp, stage=stage,
                      trust=ctx.options.trust)
    ctx.log(f"exported {', '.join(manifest['exported'])} to {ctx.run_dir / 'export'}")
    return {"exported": manifest["exported"], "data_fingerprint": data_fp}


def publish(step, artifact, run_dir, stats: dict) -> None:
    """runs/<recipe>/export, for a cached step too."""
    from ..paths import under
    user = under(run_dir, "export")
    if user.exists():
        shutil.rmtree(user)
    shutil.copytree(artifact, user, ignore=shutil.ignore_patterns("manifest.json"))
