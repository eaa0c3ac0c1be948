"""Shared by the tests/test_train_*.py files: a tiny recipe on builtin:tiny-random (plumbing, not learning) and
synthetic rows. The recipe pins fp32, so tests that compare numbers compare the same arithmetic on a GPU (where `auto` would be bf16)."""
from __future__ import annotations

import json
from pathlib import Path

from runner import api

REPO = Path(__file__).resolve().parents[2]

RECIPE = """\
recipe: train_test
seed: 7
model:
  base: builtin:tiny-random
  adapter: {{type: lora, r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}}
sources:
  a: {{path: {data}/identity.json, format: alpaca}}
  b: {{path: {data}/identity.json, format: alpaca}}
template: {{chat: chatml, system: "You are terse.", max_length: 64}}
train: {{max_steps: 4, micro_batch_size: 2, batch_size: 4, save_steps: 2, logging_steps: 1,
         learning_rate: 0.001, lr_scheduler: constant, precision: fp32}}
evaluate:
  max_rows: 16
  generate: {{prompts: ["question 3"], max_new_tokens: 12, temperature: 0}}
{extra}"""

STAGES = """\
stages:
  first: {mix: {a: 1.0}}
  second: {mix: {b: 1.0}, ewc: {lambda: 50, fisher_samples: 8}}
"""


def cuda_procs(n: int):
    """Skip mark for an n-process test on a CUDA machine with fewer than n GPUs (one GPU per NCCL rank);
    on a CPU-only machine the processes share the cores over gloo and the test runs."""
    import pytest
    import torch

    few = torch.cuda.is_available() and torch.cuda.device_count() < n
    return pytest.mark.skipif(few, reason=f"{n} training processes need {n} GPUs on a CUDA machine "
                                          f"(found {torch.cuda.device_count() if few else 0})")


def needs_cuda(what: str = "a GPU-only path"):
    """Skip mark for a test of a GPU-only path, with the reason shown in pytest's summary (-ra)."""
    import pytest
    import torch

    return pytest.mark.skipif(not torch.cuda.is_available(), reason=f"needs a CUDA device: {what}")


def recipe(tmp_path: Path, *overrides: str, extra: str = ""):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(data=REPO / "data", extra=extra))
    return api.load(path, list(overrides))


def conversation(i: int, kind: str = "a") -> list[dict]:
    if kind == "a":
        user, answer = f"question {i}", " ".join(["answer"] * (i % 7 + 1))
    elif kind == "b":
        user, answer = f"poem {i}", "白日依山盡，" * (i % 3 + 1)
    else:  # "ok": a one-word answer, learnable in a few dozen steps
        user, answer = f"say ok {i}", "ok"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def records(path: Path, n: int = 32, kind: str = "a") -> Path:
    """n records ({id, messages}) as the data steps write them."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{kind}{i}", "messages": conversation(i, kind)}, ensure_ascii=False) + "\n")
    return path


def rows(path: Path, n: int = 32, kind: str = "a") -> Path:
    """n rows as the render step writes them (the trainers read nothing else): `records` rendered with this
    recipe's template (chatml, its system prompt, max_length 64) and passed through the render check.
    The records stay beside them (<name>.records.jsonl)."""
    from runner.chat import tokenizer_for
    from runner.chat.templates import RenderCheck
    from runner.recipe.model import Template
    from runner.steps.render import _render_file

    src = records(path.with_name(path.stem + ".records.jsonl"), n, kind)
    tok = tokenizer_for("builtin:tiny-random", REPO, trust_remote_code=False)
    t = Template(chat="chatml", system="You are terse.", train_on="assistant", max_length=64)
    _render_file(src, path, tok, t, "chatml", check=RenderCheck(tok, chat="chatml"))
    return path


def losses(out_dir: Path) -> list[float]:
    history = json.loads((out_dir / "log_history.json").read_text())
    return [h["loss"] for h in history if "loss" in h]


def adapter_weights(final: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(final / "adapter_model.safetensors"))


def spec(r, stage: str | None = None, kind: str = "train"):
    """The spec the `kind` step of `stage` gives its trainer (SFTSpec) or the train layer (EvalSpec,
    ExportSpec): built from what the step kind declares for this recipe (runner/steps/<kind>.py), as a
    run would."""
    import dataclasses

    from runner.dag.compile import compile_recipe
    from runner.steps.base import StepId
    from runner.train.spec import EvalSpec, ExportSpec
    from runner.trainers.sft.sft_config import SFTSpec

    stage = stage or r.stages[0].name
    step = compile_recipe(r)[StepId(kind) if kind == "export" else StepId(kind, stage=stage)]
    more: dict = {"stage": stage}
    if kind == "train":
        more["train"] = dataclasses.replace(step.params["train"], report_to=tuple(step.runtime["report_to"]))
    if kind == "export":
        more["merge"] = step.params["output"].merge
    return {"train": SFTSpec, "evaluate": EvalSpec, "export": ExportSpec}[kind].of(step.params, r.file.parent, **more)


# a small meta recipe: fomaml_poets on the random tiny model, 6 tasks (2 held out), 3 meta-steps of 4 tasks
META = ["model.base=builtin:tiny-random", "sources.tang.limit=3000", "meta.tasks.min_rows=30",
        "meta.tasks.max_tasks=6", "meta.total_steps=3", "meta.few_shot_eval.held_out_tasks=2",
        "meta.few_shot_eval.shots=[2]", "meta.few_shot_eval.seeds=1", "meta.inner.steps=2",
        "meta.inner.learning_rate=0.05", "template.max_length=128", "train.logging_steps=1", "train.report_to=[]",
        "model.adapter.dropout=0.0"]   # dropout draws differ per process: 2 processes = 1 needs none


def meta(tmp_path: Path, *overrides: str):
    """fomaml_poets with META, its data steps run (a dry run): (graph, {step name: artifact})."""
    import io

    from rich.console import Console

    path = REPO / "recipes" / "fomaml_poets.yaml"
    _, graph, records, _ = api.run(path, [*META, *overrides], cache_dir=str(tmp_path / "cache"), dry_run=True,
                                   output=str(tmp_path / "run"), console=Console(file=io.StringIO()))
    return graph, {r.name: Path(r.artifact) for r in records if r.artifact}


def fomaml_spec(graph, role: str = "meta"):
    """The FOMAMLSpec train.<role> gives the fomaml trainer (as runner/steps/meta_train.py builds it)."""
    import dataclasses

    from runner.steps.base import StepId
    from runner.trainers.fomaml.fomaml_config import FOMAMLSpec

    step = graph[StepId("meta_train", stage=role)]
    return FOMAMLSpec.of(step.params, REPO / "recipes", stage=role, train=dataclasses.replace(
        step.params["train"], report_to=tuple(step.runtime["report_to"])))


def train_tasks(artifacts: dict) -> list[tuple[str, str]]:
    """(name, rendered folder) of the tasks train.meta trains on, in the plan's order."""
    plan = json.loads((artifacts["tasks"] / "plan.json").read_text(encoding="utf-8"))
    return [(t["name"], str(artifacts["render.tasks"] / "tasks" / t["dir"])) for t in plan["train"]]
