"""The recipe language: shipped recipes, the schema as single source of truth, loading semantics."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runner import api
from runner.errors import ValidationError
from runner.recipe import model
from runner.recipe.schema import _deref, schema

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if not p.name.startswith("base_"))
HEAVY = ("torch", "transformers", "datasets", "trl", "peft", "deepspeed")


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_validates(path):
    r = api.load(path)
    assert r.name == path.stem
    assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/recipe.schema.json\n")


def test_four_contract_examples_are_shipped():
    assert {p.stem for p in RECIPES} >= {"poetry_lora", "curriculum_3stage", "fomaml_poets", "stage2_correction"}


def _walk(node, path=""):
    node = _deref(node)
    for key, sub in node.get("properties", {}).items():
        yield f"{path}.{key}" if path else key, sub, node
        yield from _walk(sub, f"{path}.{key}" if path else key)
    for k in ("items", "additionalProperties"):
        if isinstance(node.get(k), dict):
            yield from _walk(node[k], path + "[]")
    for sub in node.get("oneOf", []) + [a["then"] for a in node.get("allOf", [])]:
        yield from _walk(sub, path)


def test_every_property_has_description_default_and_example():
    missing = []
    for path, sub, parent in _walk(schema()):
        d = _deref(sub)
        required = path.rsplit(".", 1)[-1] in parent.get("required", [])
        if "description" not in d:
            missing.append(f"{path}: description")
        if "default" not in d and not required:
            missing.append(f"{path}: default")
        if "examples" not in d and path.rsplit(".", 1)[-1] != "kind":
            missing.append(f"{path}: examples")
    assert not missing, missing


def test_every_object_is_closed():
    def objects(node, seen=()):
        node = _deref(node)
        if node.get("type") == "object" or "properties" in node:
            yield node
        for sub in list(node.get("properties", {}).values()) + [a["then"] for a in node.get("allOf", [])] + node.get("oneOf", []):
            yield from objects(sub)
        for k in ("items", "additionalProperties"):
            if isinstance(node.get(k), dict):
                yield from objects(node[k])
    for node in objects(schema()):
        if "allOf" in node:   # filters: closed in each kind's branch
            continue
        assert node.get("additionalProperties") is not None, node.get("description")
        assert node.get("additionalProperties") is not True


def test_typed_model_matches_schema():
    """model.py field names are exactly the schema's keys, so nothing is invented downstream."""
    s = schema()
    pairs = {
        model.Model: s["properties"]["model"], model.Adapter: s["properties"]["model"]["properties"]["adapter"],
        model.Source: s["$defs"]["source"], model.Train: s["$defs"]["train"],
        model.Template: s["properties"]["template"], model.Split: s["properties"]["split"],
        model.Sampling: s["properties"]["sampling"], model.Evaluate: s["properties"]["evaluate"],
        model.Generate: s["properties"]["evaluate"]["properties"]["generate"], model.Output: s["properties"]["output"],
        model.Ewc: s["$defs"]["stage"]["properties"]["ewc"], model.Task: s["$defs"]["task"],
        model.MetaSplit: s["properties"]["meta"]["properties"]["split"],
        **{cls: s["$defs"][f"filter_{kind}"] for kind, cls in model.FILTER_TYPES.items()},
    }
    for cls, node in pairs.items():
        fields = {f.name.rstrip("_") for f in dataclasses.fields(cls)}
        assert fields == set(node["properties"]), cls.__name__
    top = {f.name for f in dataclasses.fields(model.Recipe)} - {"file", "document", "secrets"}
    assert top == set(s["properties"]) - {"extends", "mix", "size"}   # mix/size live in stages


def test_defaults_come_from_the_schema():
    r = api.load(ROOT / "recipes" / "poetry_lora.yaml")
    assert r.train.lr_scheduler == schema()["$defs"]["train"]["properties"]["lr_scheduler"]["default"]
    assert r.sources["tang"].on_error == "skip"
    assert r.filters[1].max_line_repeats == 3 and r.filters[1].ngram_size == 4
    assert r.stages[0].name == "main" and r.stages[0].size == 25000
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.train.epochs = 1  # type: ignore[misc]


def test_extends_merges_key_by_key_and_stages_inherit_train():
    r = api.load(ROOT / "recipes" / "curriculum_3stage.yaml")
    assert r.template.max_length == 256 and r.model.adapter.r == 8      # from base_lora.yaml
    base, task, domain = r.stages
    assert base.train.epochs == 2 and task.train.epochs == 1            # stage override vs recipe train
    assert task.ewc.lambda_ == 0.05 and task.ewc.fisher_samples == 256
    assert domain.size == 3000 and r.expand("task") == ("identity", "tools")
    c = api.load(ROOT / "recipes" / "stage2_correction.yaml")
    assert c.stages[0].skip and c.stages[1].size == 0.2 and c.stages[2].size == 3000
    assert c.train.learning_rate == 8.0e-5 and c.stages[1].train.learning_rate == 8.0e-5


def test_set_overrides_coerce_to_schema_types(tmp_path):
    r = api.load(ROOT / "recipes" / "poetry_lora.yaml",
                 ["model.base=builtin:tiny", "train.epochs=1", "recipe=123", "train.report_to=[tensorboard]"])
    assert r.model.base == "builtin:tiny" and r.train.epochs == 1 and r.recipe == "123"
    assert r.train.report_to == ("tensorboard",)


def test_interpolation_and_yaml12_floats(tmp_path):
    (tmp_path / "r.yaml").write_text(
        f"recipe: interp\nmodel: {{base: builtin:tiny}}\nsources:\n  a: {{path: {ROOT}/data/identity.json, format: alpaca}}\n"
        "train: {learning_rate: 1e-4, warmup_ratio: 0.1}\ntemplate: {system: 'lr is ${train.learning_rate}'}\n")
    r = api.load(tmp_path / "r.yaml")
    assert r.train.learning_rate == 1e-4
    assert r.template.system == "lr is 0.0001"


def test_show_prints_the_canonical_document_with_defaults():
    out = subprocess.run([sys.executable, "-m", "runner", "show", "recipes/curriculum_3stage.yaml"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    doc = yaml.safe_load(out)
    assert "extends" not in doc and doc["stages"]["task"]["ewc"]["gamma"] == 1.0
    assert doc["split"] == {"strategy": "random", "eval": 0.05, "by": None}
    assert api.load(ROOT / "recipes" / "curriculum_3stage.yaml").document == doc


def test_schema_command_prints_the_schema():
    out = subprocess.run([sys.executable, "-m", "runner", "schema"], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert json.loads(out) == schema()


def test_secrets_from_the_environment_are_masked_in_show(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN_TEST", "hf_supersecret")
    monkeypatch.setenv("GREETING", "hello")
    (tmp_path / "r.yaml").write_text(
        f"recipe: s\nmodel: {{base: builtin:tiny}}\nsources:\n  a: {{path: {ROOT}/data/identity.json, format: alpaca}}\n"
        "template: {system: '${oc.env:HF_TOKEN_TEST}'}\nevaluate: {generate: {prompts: ['${oc.env:GREETING}']}}\n")
    r = api.load(tmp_path / "r.yaml")
    assert r.template.system == "hf_supersecret"          # the run gets the value ...
    shown = api.show(r)
    assert "hf_supersecret" not in shown and "system: '***'" in shown   # ... the screen does not
    # every value from the environment is masked, whatever the variable is called (HF_AUTH, GITHUB_PAT...)
    assert "hello" not in shown and "prompts:\n    - '***'" in shown and "max_tokens" not in shown


def test_validate_collects_every_error_at_once(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "recipe: many\nmodel: {base: builtin:tiny, adapter: {rr: 8}}\n"
        f"sources:\n  a: {{path: {ROOT}/data/identity.json, format: alpacca}}\n"
        "train: {lerning_rate: 1, epochs: x}\n")
    with pytest.raises(ValidationError) as e:
        api.load(tmp_path / "r.yaml")
    assert [p.where.line for p in e.value.problems] == [2, 4, 5, 5]


LIGHT = """
import sys
from runner.cli import main
for argv in (["validate", "recipes/poetry_lora.yaml"], ["show", "recipes/curriculum_3stage.yaml"], ["schema"],
             ["plan", "recipes/poetry_lora.yaml", "--cache-dir", sys.argv[1]],
             ["diff", "recipes/curriculum_3stage.yaml", "recipes/stage2_correction.yaml"]):
    assert main(argv) in (0, 1), argv
heavy = sorted(m for m in {HEAVY} if m in sys.modules)
print("HEAVY:", heavy)
"""


def test_fast_commands_never_import_heavy_libraries(tmp_path):
    out = subprocess.run([sys.executable, "-c", LIGHT.replace("{HEAVY}", repr(set(HEAVY))), str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY: []" in out.stdout, out.stdout[-500:]


def test_paths_in_a_base_from_another_folder_stay_relative_to_the_base(tmp_path):
    (tmp_path / "bases" / "data").mkdir(parents=True)
    (tmp_path / "team").mkdir()
    (tmp_path / "bases" / "data" / "a.json").write_text((ROOT / "data" / "identity.json").read_text())
    (tmp_path / "bases" / "common.yaml").write_text(
        "recipe: common\nmodel: {base: Qwen/Qwen2-1.5B}\nsources:\n  a: {path: data/a.json, format: alpaca}\n")
    (tmp_path / "team" / "r.yaml").write_text("recipe: r\nextends: ../bases/common.yaml\n")
    r = api.load(tmp_path / "team" / "r.yaml")
    assert r.sources["a"].path == "../bases/data/a.json"
    assert r.path(r.sources["a"].path) == (tmp_path / "bases" / "data" / "a.json").resolve()
    assert r.model.base == "Qwen/Qwen2-1.5B"   # a hub id is not a path


def test_set_edge_cases():
    path = ROOT / "recipes" / "curriculum_3stage.yaml"
    assert api.load(path, ["recipe=1.10"]).recipe == "1.10"           # the text as written, not float 1.1
    with pytest.raises(ValidationError, match="the name '1' does not match"):
        api.load(path, ["stages.base.mix.1=0.5"])                      # a digit under a mapping is a key
    assert api.load(path, ["train.micro_batch_size=2.0", "train.batch_size=8"]).train.micro_batch_size == 2
    with pytest.raises(ValidationError) as e:
        api.load(path, ["filters[0]=null"])
    assert len(e.value.problems) == 1                                  # one message, not one per rule


def test_integers_are_integers(tmp_path):
    (tmp_path / "r.yaml").write_text(f"recipe: t\nmodel: {{base: builtin:tiny}}\nsources:\n  a: {{path: {ROOT}/data/identity.json, format: alpaca}}\n"
                                     "train: {micro_batch_size: 2.0}\n")
    with pytest.raises(ValidationError, match="micro_batch_size: expected integer or 'auto', got a number 2.0"):
        api.load(tmp_path / "r.yaml")


def test_a_stage_after_a_skipped_one_needs_init_from():
    path = ROOT / "recipes" / "curriculum_3stage.yaml"
    with pytest.raises(ValidationError, match="starts from stage 'base', which is skipped; set model.init_from"):
        api.load(path, ["stages.base.skip=true"])
    assert api.load(path, ["stages.base.skip=true", "model.init_from=../runs/x/base/final"])
