"""export: the last stage's adapter (and the merged model with output.merge) in formats that
AutoModelForCausalLM / PeftModel load, with the fingerprint of the data that trained it."""
from __future__ import annotations

import dataclasses
import json

from dataclasses import dataclass, field

from .base import Declared, Kind, StepId
from .result import Result

VERSION = 1


@dataclass(frozen=True)
class ExportResult(Result):
    exported: list[str] = field(default_factory=list)   # what was written: adapter, merged
    data_fingerprint: str | None = None                 # the render step that trained the exported stage


KIND = Kind("export", result=ExportResult)


def steps(recipe) -> list[StepId]:
    return [] if recipe.meta or not recipe.active_stages else [StepId("export")]


def declare(recipe, step: StepId) -> Declared:
    last = recipe.active_stages[-1]
    # the manifest names the recipe, its base model and seed (builtin:tiny's weights are that seed's init);
    # the adapter is exported as it was saved, so its settings are the train step's business
    return Declared({"output": recipe.output, "model": dataclasses.replace(recipe.model, init_from=None, adapter=None),
                     "seed": recipe.seed, "recipe": recipe.name},
                    inputs=(StepId("train", stage=last.name),))


def run(ctx) -> dict:
    from ..train.export import export
    from ..train.spec import ExportSpec
    p = ctx.params
    (train_step,) = ctx.step.inputs
    art = ctx.input(train_step)
    components = json.loads((art / "manifest.json").read_text())["components"]
    data_fp = components["inputs"].get(str(StepId("render", stage=train_step.stage)))
    spec = ExportSpec.of(p, ctx.base_dir, stage=train_step.stage, merge=p["output"].merge)
    manifest = export(spec, art / "final", ctx.out, fingerprint=data_fp, stage=train_step.stage,
                      trust=ctx.options.trust, secrets=ctx.secrets)
    ctx.log(f"exported {', '.join(manifest['exported'])} to {ctx.run_dir / 'export'}")
    return {"exported": manifest["exported"], "data_fingerprint": data_fp}


def publish(step, artifact, run_dir, result) -> None:
    """runs/<recipe>/export, for a cached step too."""
    from ..paths import publish_tree
    publish_tree(run_dir, "export", artifact, skip=("manifest.json",))
