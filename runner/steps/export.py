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
    user = ctx.run_dir / "export"
    if user.exists():
        shutil.rmtree(user)
    shutil.copytree(ctx.out, user)
    ctx.log(f"exported {', '.join(manifest['exported'])} to {user}")
    return {"exported": manifest["exported"], "dir": str(user), "data_fingerprint": data_fp}
