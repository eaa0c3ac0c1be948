"""A meta recipe's rows go through the one render path: render.tasks renders every task file with the
render check (so a template that trains a role marker is refused as for an SFT recipe), the rows it
writes are the token ids the trainers used to render for themselves, `recipe inspect` shows them, and the
trainers' registry runs FOMAML and the SFT control from them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import train as F

from runner.errors import StepError

# chatml whose generation mark also covers the assistant header: it would train <|im_start|>assistant
ROLE_MARKER_TRAINED = """
{%- for m in messages %}
    {%- if m['role'] == 'assistant' %}
        {%- generation %}{{ '<|im_start|>assistant\\n' + m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}
    {%- else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}
"""


@pytest.fixture(scope="module")
def meta(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meta")
    return F.meta(tmp)


def test_render_tasks_writes_the_rows_the_trainers_rendered_before(meta):
    """Every task file, rendered by the render step machinery: exactly templates.render of each record with
    the recipe's template (what train/rows.py did at training time), in the split's order."""
    from runner.chat import tokenizer_for
    from runner.chat.templates import render

    graph, art = meta
    t = graph[next(s.id for s in graph.steps if s.name == "render.tasks")].params["template"]
    tok = tokenizer_for("builtin:tiny-random", F.REPO, trust_remote_code=False)
    split, rendered = art["split"] / "tasks", art["render.tasks"] / "tasks"
    tasks = sorted(d.name for d in split.iterdir() if d.is_dir())
    assert len(tasks) == 6 and sorted(d.name for d in rendered.iterdir()) == tasks
    n = 0
    for task in tasks:
        for part in ("support", "query", "test"):
            records = [json.loads(x) for x in (split / task / f"{part}.jsonl").read_text(encoding="utf-8").splitlines()]
            rows = [json.loads(x) for x in (rendered / task / f"{part}.jsonl").read_text(encoding="utf-8").splitlines()]
            assert [r["id"] for r in rows] == [r["id"] for r in records]
            for rec, row in zip(records, rows):
                want = render(rec["messages"], tok, chat=t.chat, system=t.system, train_on=t.train_on,
                              max_length=t.max_length)
                assert (row["input_ids"], row["labels"]) == (want.input_ids, want.labels)
                n += 1
    assert n > 100


def test_a_template_that_trains_a_role_marker_is_refused_for_a_meta_recipe_as_for_sft(tmp_path):
    bad = tmp_path / "bad.jinja"
    bad.write_text(ROLE_MARKER_TRAINED)
    with pytest.raises(StepError, match=r"step render.main failed: example .* '<\|im_start\|>' is a role marker"):
        F.api.run(F.recipe(tmp_path).file, [f"template.chat={bad}"], dry_run=True,
                  cache_dir=str(tmp_path / "sft_cache"), output=str(tmp_path / "sft"))
    with pytest.raises(StepError, match=r"step render.tasks failed: example .* '<\|im_start\|>' is a role marker"):
        F.meta(tmp_path, f"template.chat={bad}")


def test_inspect_shows_a_meta_recipes_rendered_rows(meta, tmp_path):
    import io

    from rich.console import Console

    from runner.cli.inspect import inspect

    graph, art = meta
    cache = art["render.tasks"].parents[1]    # <cache>/objects/<fp>
    out = io.StringIO()
    inspect(str(F.REPO / "recipes" / "fomaml_poets.yaml"), F.META, n=2, cache_dir=str(cache),
            console=Console(file=out, width=200))
    text = out.getvalue()
    assert text.count("«") >= 2 and "<|im_end|>»" in text
    assert "«<|im_start|>" not in text and "«user" not in text
    first = sorted(d.name for d in (art["render.tasks"] / "tasks").iterdir())[0]
    ids = [json.loads(x)["id"] for x in (art["render.tasks"] / "tasks" / first / "support.jsonl").read_text().splitlines()]
    assert ids[0] in text and ids[1] in text


def test_the_sft_control_trains_on_the_rendered_rows_through_the_registry(meta, tmp_path):
    """train.control: the sft trainer on every training task's support and query rows, with the control's
    spec (fomaml_config.control_spec): the FOMAML steps and rows per step."""
    from runner.steps.meta_train import _control_rows
    from runner.trainers import run
    from runner.trainers.fomaml.fomaml_config import control_spec

    graph, art = meta
    spec = control_spec(F.fomaml_spec(graph, "control"))
    tasks = F.train_tasks(art)
    rows = _control_rows(tasks, tmp_path / "rows.jsonl")
    n = sum(len((Path(d) / p).read_text().splitlines()) for _, d in tasks for p in ("support.jsonl", "query.jsonl"))
    assert len(open(rows).read().splitlines()) == n
    assert spec.train.batch_size == 4 * (2 * 4 + 4) and spec.train.max_steps == 3 and spec.stage == "control"
    metrics = run("sft", spec, {"train_rows": rows, "out_dir": str(tmp_path / "control"), "resume": False})
    assert metrics["steps"] == 3 and (tmp_path / "control" / "final" / "adapter_model.safetensors").is_file()


@F.cuda_procs(2)
def test_recipe_run_trains_a_meta_recipe_under_the_launcher(meta, tmp_path):
    """`recipe run --launcher torchrun --num-procs 2` on a meta recipe: train.meta through the one worker
    (meta recipes refused any launcher before)."""
    import io

    from rich.console import Console

    graph, art = meta
    out = io.StringIO()
    run = F.api.run(F.REPO / "recipes" / "fomaml_poets.yaml", F.META, cache_dir=str(art["render.tasks"].parents[1]),
                    only="train.meta", launcher="torchrun", num_procs=2, output=str(tmp_path / "run"),
                    console=Console(file=out, width=400))
    (meta_rec,) = [r for r in run.records if r.name == "train.meta"]
    assert meta_rec.status == "ran" and meta_rec.stats["metrics"]["steps"] == 3
    assert (tmp_path / "run" / "meta" / "final" / "adapter_model.safetensors").is_file()
    assert "torch.distributed.run" in out.getvalue() and "--nproc-per-node=2 " in out.getvalue()
