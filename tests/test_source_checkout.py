"""A source checkout runs without installing: `python -m runner ...` from the repository root finds the
schema, the builtin model files, the chat templates and the DeepSpeed presets in the checkout itself."""
import json
import subprocess
import sys
import textwrap

from helpers import train as F

# what `python -m runner` in the repository root sees when `recipe` was never installed: the checkout on
# sys.path and no installed finder (an editable install's finder would also serve `runner.schemas`)
UNINSTALLED = textwrap.dedent("""\
    import runpy, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()
                        and "editable" not in getattr(f, "__module__", "").lower()]
    sys.path_importer_cache.clear()
    sys.path.insert(0, {root!r})
    for name in [m for m in sys.modules if m == "runner" or m.startswith("runner.")]:
        del sys.modules[name]
    import runner
    assert runner.__file__.startswith({root!r}), runner.__file__
    sys.argv = ["runner", *sys.argv[1:]]
    runpy.run_module("runner", run_name="__main__")
    """).format(root=str(F.REPO))


def _runner(*args, cwd=F.REPO):
    return subprocess.run([sys.executable, "-c", UNINSTALLED, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_schema_validate_and_plan_from_the_checkout():
    schema = _runner("schema")
    assert schema.returncode == 0, schema.stderr
    on_disk = json.loads((F.REPO / "schemas" / "recipe.schema.json").read_text())
    assert json.loads(schema.stdout) == on_disk
    done = _runner("validate", "recipes/poetry_lora.yaml", "recipes/curriculum_3stage.yaml")
    assert done.returncode == 0, done.stderr
    assert _runner("plan", "recipes/poetry_lora.yaml").returncode == 0


def test_a_deepspeed_run_on_builtin_tiny_from_the_checkout(tmp_path):
    """builtin:tiny's files, the chatml template and the zero2 preset all come from the checkout."""
    F.recipe(tmp_path)
    done = _runner("run", str(tmp_path / "recipe.yaml"), "--set", "train.max_steps=1", "--set",
                   "train.deepspeed=zero2", "--set", "evaluate.generate.prompts=[]", "--output",
                   str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "deepspeed zero2 (ZeRO-2)" in done.stdout
    assert (tmp_path / "run" / "export" / "adapter" / "adapter_model.safetensors").is_file()
