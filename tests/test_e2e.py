"""The four shipped recipes end to end on builtin:tiny, as a user runs them (the CLI in a subprocess),
with overrides that only shrink sizes and steps. Plus resume after kill -9 in the middle of training."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "model.base=builtin:tiny-random"]   # plumbing: the fast random model


def recipe(*args: str, cwd: Path = ROOT, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, **(env or {})}, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


def test_poetry_lora_with_deepspeed_zero2(work):
    out = work / "poetry"
    recipe("run", "recipes/poetry_lora.yaml", *TINY, "--set", "size=48", "--set", "train.max_steps=3",
           "--set", "evaluate.generate.max_new_tokens=16", "--cache-dir", str(work / "cache"), "--output", str(out))
    report = json.loads((out / "report.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["ran"] * len(report["steps"])
    (stage,) = report["stages"]
    assert stage["rows"]["train"] == 48 and stage["metrics"]["train"]["steps"] == 3
    assert set(stage["metrics"]["eval"]["loss"]) == {"tang"}
    assert stage["metrics"]["eval"]["samples"][0]["prompt"] == "白日依山盡，黃河入海流。"
    assert (out / "main" / "final" / "adapter_config.json").is_file()
    manifest = json.loads((out / "export" / "export_manifest.json").read_text())
    assert manifest["data_fingerprint"] == stage["data_fingerprint"]
    assert (out / "loss_main.png").is_file() and "## Stage main" in (out / "report.md").read_text()
    # an unchanged rerun reuses every step, and still leaves a whole run directory
    again = work / "poetry_again"
    recipe("run", "recipes/poetry_lora.yaml", *TINY, "--set", "size=48", "--set", "train.max_steps=3",
           "--set", "evaluate.generate.max_new_tokens=16", "--cache-dir", str(work / "cache"), "--output", str(again))
    report = json.loads((again / "report.json").read_text())
    assert {s["status"] for s in report["steps"]} == {"cached"}
    assert (again / "main" / "final" / "adapter_config.json").is_file() and (again / "loss_main.png").is_file()
    assert (again / "export" / "adapter" / "adapter_config.json").is_file()
    assert report["stages"][0]["checkpoint"] == str(again / "main" / "final")


CURRICULUM = [*TINY, "--set", "size=40", "--set", "sources.poetry.limit=2000", "--set", "stages.domain.size=40", "--set", "train.max_steps=2",
              "--set", "stages.task.ewc.fisher_samples=8", "--set", "evaluate.max_rows=4",
              "--set", "evaluate.generate.prompts=[你好]", "--set", "evaluate.generate.max_new_tokens=8"]


def test_curriculum_three_stages_with_ewc_and_forgetting_table(work):
    out = work / "curriculum"
    recipe("run", "recipes/curriculum_3stage.yaml", *CURRICULUM, "--cache-dir", str(work / "cache"),
           "--output", str(out))
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["base", "task", "domain"]
    for st in report["stages"]:
        assert st["metrics"]["train"]["steps"] == 2
        assert abs(sum(st["mix"]["achieved"].values()) - 1) < 1e-9
    # the starting model and every stage evaluated on every source: the forgetting table
    assert list(report["forgetting"]) == ["before", "base", "task", "domain"]
    for row in report["forgetting"].values():
        assert set(row) == {"general", "identity", "tools", "poetry"}
    assert report["before"]["loss"] == report["forgetting"]["before"] and report["before"]["samples"]
    # generation health for every evaluated stage: the recipe's prompt + 2 eval rows' prompts per source
    assert list(report["generation_health"]) == ["before", "base", "task", "domain"]
    for name, h in report["generation_health"].items():
        assert h["generations"] == 1 + 2 * 4
        assert 0 <= h["stop_rate"] <= 1 and 0 <= h["role_leak_rate"] <= 1
    for st in report["stages"]:
        assert {"stop_rate", "role_leak_rate"} <= set(st["metrics"]["eval"])
    md = (out / "report.md").read_text()
    assert "## Before training" in md and "## Generation health" in md and "| before |" in md
    task = report["stages"][1]["mix"]["achieved"]
    assert abs(task["general"] - 0.7) < 0.03 and abs(task["identity"] + task["tools"] - 0.3) < 0.03
    assert (out / "base" / "final" / "ewc_state.safetensors").is_file()   # the Fisher stage 2 is anchored to
    assert "Forgetting" in (out / "report.md").read_text()


def test_stage2_correction_restarts_from_stage_one(work):
    out = work / "correction"
    base_final = work / "curriculum" / "base" / "final"
    assert base_final.is_dir(), "runs after the curriculum test"
    recipe("run", "recipes/stage2_correction.yaml", *CURRICULUM, "--set", f"model.init_from={base_final}",
           "--cache-dir", str(work / "cache"), "--output", str(out))
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["task", "domain"]
    ran = [s["name"] for s in report["steps"] if s["kind"] == "train"]
    assert ran == ["train.task", "train.domain"]
    # the same data steps as the curriculum: cached, not recomputed
    assert all(s["status"] == "cached" for s in report["steps"] if s["kind"] in ("load", "filter", "dedup", "split"))
    # "before" is the model it starts from: stage base of the curriculum, on the same eval rows
    curriculum = json.loads((work / "curriculum" / "report.json").read_text())
    for src, loss in report["forgetting"]["before"].items():
        assert loss == pytest.approx(curriculum["forgetting"]["base"][src], abs=1e-5)


def test_seed003_pair_wrong_labels_then_corrective_rerun(work):
    """Reduced (random model, a few steps): the pair runs end to end and reports the rates; the numbers
    that show the failure and the fix come from a real run (README, "Seed 003")."""
    small = [*TINY, "--set", "sources.poetry.limit=2000", "--set", "train.max_steps=2",
             "--set", "evaluate.max_rows=4", "--set", "evaluate.generate.max_new_tokens=8",
             "--set", "evaluate.generate.eval_prompts=1", "--cache-dir", str(work / "cache")]
    wrong, fix = work / "seed003_wrong", work / "seed003_fix"
    recipe("run", "recipes/seed003_wrong_labels.yaml", *small, "--set", "size=40", "--output", str(wrong))
    # 20% of the reduced 40 rows (the recipe's own size is the fraction 0.2 of the full mix)
    recipe("run", "recipes/seed003_fix.yaml", *small, "--set", "size=8",
           "--set", f"model.init_from={wrong / 'base' / 'final'}", "--output", str(fix))
    a, b = (json.loads((d / "report.json").read_text()) for d in (wrong, fix))
    assert list(a["generation_health"]) == ["before", "base", "task"]
    assert list(b["generation_health"]) == ["before", "task"]
    assert all(h["generations"] == 3 + 4 for h in [*a["generation_health"].values(), *b["generation_health"].values()])
    assert b["stages"][0]["rows"]["train"] == 8 and a["stages"][1]["rows"]["train"] == 40


def test_fomaml_recipe_meta_trains_compares_and_writes_the_task_layout(work):
    import pyarrow.parquet as pq

    out = work / "fomaml"
    small = ["--set", "sources.tang.limit=3000", "--set", "meta.tasks.min_rows=30", "--set", "meta.tasks.max_tasks=6",
             "--set", "meta.total_steps=2", "--set", "meta.few_shot_eval.held_out_tasks=2",
             "--set", "template.max_length=128", "--set", "meta.inner.learning_rate=0.05"]
    # exact-match accuracy, with a pattern every poem has an answer to (its first character)
    answers = ["--set", r"meta.few_shot_eval.answer_pattern=^(\S)", "--set", "meta.few_shot_eval.answer_max_new_tokens=2"]
    recipe("run", "recipes/fomaml_poets.yaml", *TINY, *small, *answers, "--cache-dir", str(work / "cache"), "--output", str(out))
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["steps"]][-5:] == ["tasks", "render.tasks", "train.meta", "train.control",
                                                       "eval.few_shot"]
    assert report["meta_training"]["meta"]["steps"] == 2 and report["meta_training"]["control"]["steps"] == 2
    rows = report["few_shot"]
    # 3 models x 2 held-out tasks x 2 shot counts x 3 seeds
    assert len(rows) == 36 and {r["model"] for r in rows} == {"start", "sft_control", "fomaml"}
    assert all(r["loss_after"] < r["loss_before"] for r in rows if r["model"] == "start")   # the inner loop adapts
    assert "adapts best" in (out / "report.md").read_text()
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["accuracy_before"] <= 1 and r["answered_rows"] > 0
               and r["rows_without_reference_answer"] == 0 for r in rows)
    assert "accuracy after" in (out / "report.md").read_text()
    # the layout: every task's three files, k-shot sets nested and never test rows
    held = [p.name for p in (out / "tasks").iterdir()]
    assert len(held) == 6 and all((out / "tasks" / t / f"{part}.parquet").is_file() for t in held
                                  for part in ("support", "query", "test"))
    for f in (out / "few_shot").glob("*_5shot_seed*.parquet"):
        task = f.name.split("_5shot")[0]
        five = pq.read_table(f).to_pylist()
        ten = pq.read_table(f.with_name(f.name.replace("_5shot", "_10shot"))).to_pylist()
        test = pq.read_table(out / "tasks" / task / "test.parquet").to_pylist()
        assert len(five) == 5 and five == ten[:5]
        assert not {(r["prompt"], r["response"]) for r in ten} & {(r["prompt"], r["response"]) for r in test}
    assert len(list((out / "few_shot").glob("*.parquet"))) == 2 * 2 * 3
    # train.meta and train.control train like any stage: their checkpoints (optimizer state) are dropped once
    # the step is cached, and --force --only retrains from the start instead of resuming its own final step
    fps = {s["name"]: s["fingerprint"] for s in report["steps"]}
    assert not any((work / "cache" / "partial" / fps[n]).exists() for n in ("train.meta", "train.control"))
    assert not (work / "cache" / "index" / "fomaml_poets" / "train.meta.partial.json").exists()
    recipe("run", "recipes/fomaml_poets.yaml", *TINY, *small, *answers, "--cache-dir", str(work / "cache"),
           "--output", str(out), "--force", "--only", "train.meta")
    again = json.loads((out / "report.json").read_text())
    assert [s["status"] for s in again["steps"] if s["name"] == "train.meta"] == ["ran"]
    assert again["meta_training"]["meta"]["resumed_from"] == 0
    # --dry-run stops before training and says which tasks are held out
    p = recipe("run", "recipes/fomaml_poets.yaml", *TINY, *small, "--dry-run", "--cache-dir", str(work / "cache"),
               "--output", str(work / "fomaml_dry"))
    assert "6 tasks, 4 to train on, held out for few-shot evaluation" in p.stdout
    assert "training was not started" in p.stdout


def test_dry_run_checks_masks_and_stops_before_training(work):
    p = recipe("run", "recipes/curriculum_3stage.yaml", *CURRICULUM, "--dry-run", "--cache-dir", str(work / "dry"),
               "--output", str(work / "dry_run"))
    assert "render check passed" in p.stdout and "training was not started" in p.stdout
    assert "stage task:" in p.stdout and "tools" in p.stdout
    report = json.loads((work / "dry_run" / "report.json").read_text())
    assert not [s for s in report["steps"] if s["kind"] in ("train", "evaluate", "export")]


def test_inspect_highlights_trained_tokens(work):
    p = recipe("inspect", str(ROOT / "recipes" / "curriculum_3stage.yaml"), *CURRICULUM, "--stage", "task", "--n", "2",
               "--cache-dir", str(work / "dry"), cwd=work)
    assert p.stdout.count("«") >= 2 and "<|im_end|>»" in p.stdout
    assert "«<|im_start|>" not in p.stdout and "«user" not in p.stdout
    assert not (work / "runs").exists()   # a look, not a run: no run directory, no report overwritten


def test_unreachable_hub_model_is_one_clear_line(work):
    p = recipe("run", "recipes/poetry_lora.yaml", "--set", "size=8", "--set", "train.max_steps=1",
               "--cache-dir", str(work / "hub"), "--output", str(work / "hub_run"), check=False,
               env={"HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "Qwen/Qwen2-1.5B" in p.stderr and "builtin:tiny" in p.stderr


def test_resume_after_kill_9_in_training_and_refuse_on_changed_data(work, tmp_path):
    args = ["run", "recipes/poetry_lora.yaml", *TINY, "--set", "size=64", "--set", "train.deepspeed=null",
            "--set", "train.max_steps=8", "--set", "train.save_steps=2", "--set", "evaluate.generate.prompts=[]",
            "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "run")]
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        done = list((tmp_path / "cache" / "partial").glob("*/checkpoints/checkpoint-4/trainer_state.json"))
        if done or proc.poll() is not None:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a change to the half-trained stage's data is refused ...
    p = recipe(*[a if a != "size=64" else "size=56" for a in args], check=False)
    assert p.returncode == 2 and "refusing to resume" in p.stderr and "--force" in p.stderr
    # ... while the same recipe resumes at the saved step and finishes
    recipe(*args)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    metrics = report["stages"][0]["metrics"]["train"]
    assert metrics["resumed_from"] >= 4 and metrics["steps"] == 8


def _fewer_gpus_than(n: int) -> bool:
    import torch
    return torch.cuda.is_available() and torch.cuda.device_count() < n


@pytest.mark.skipif(_fewer_gpus_than(2), reason="2 training processes need 2 GPUs on a CUDA machine")
def test_two_processes_reach_the_loss_of_one(work):
    """`recipe run --launcher torchrun --num-procs 2`: world size 2 halves gradient accumulation, so the
    effective batch and therefore the losses match a single process."""
    common = ["run", "recipes/poetry_lora.yaml", *TINY, "--set", "size=32", "--set", "train.max_steps=3",
              "--set", "train.deepspeed=null", "--set", "evaluate.generate.prompts=[]",
              "--set", "train.precision=fp32",   # compared at fp32 tolerance, also on a GPU
              "--cache-dir", str(work / "mp_cache")]
    losses = {}
    for procs in (1, 2):
        extra = ["--launcher", "torchrun", "--num-procs", "2"] if procs == 2 else []
        recipe(*common, *extra, "--output", str(work / f"mp{procs}"))
        report = json.loads((work / f"mp{procs}" / "report.json").read_text())
        losses[procs] = report["stages"][0]["metrics"]["train"]["train_loss"]
    assert losses[1] == pytest.approx(losses[2], rel=1e-4)
