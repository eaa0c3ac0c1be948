"""One home for each fact (issue 9): the values several layers need are defined once and read from there."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from runner.errors import RecipeError
from runner.recipe import model
from runner.recipe.schema import schema

ROOT = Path(__file__).resolve().parent.parent


def test_deepspeed_presets_are_the_shipped_json_files():
    shipped = {p.stem for p in (ROOT / "runner" / "train" / "deepspeed").glob("*.json")}
    assert set(model.DEEPSPEED_PRESETS) == shipped and len(shipped) >= 5
    from runner.train import distributed
    assert distributed.PRESETS is model.DEEPSPEED_PRESETS
    # the schema's description names exactly the shipped presets (what an editor shows a user)
    described = json.dumps(schema())
    assert all(name in described for name in shipped)


def test_one_suffix_list_and_one_role_list():
    from runner import paths
    from runner.chat import templates
    from runner.data import formats
    from runner.recipe.validate import sources as validate
    from runner.sources import readers
    assert readers.READABLE is paths.READABLE and validate.READABLE is paths.READABLE
    assert formats.ROLES is model.ROLES and templates.ROLES is model.ROLES


def test_grad_accum_refuses_a_batch_that_does_not_divide(tmp_path):
    train = dataclasses.replace(_train(tmp_path), batch_size=6, micro_batch_size=4, world_size=1)
    with pytest.raises(RecipeError, match="batch_size 6 is not a multiple of micro_batch_size 4"):
        train.grad_accum
    assert dataclasses.replace(train, batch_size=8).grad_accum == 2


def test_one_launcher_rule(tmp_path):
    """The API refuses a bad launcher combination with the same words the launcher itself uses."""
    from runner.train.launch import check, command
    for kwargs, words in [({"launcher": "torchrun", "num_procs": 2, "hostfile": "h"}, "--hostfile is read by"),
                          ({"launcher": "deepspeed", "num_procs": None, "hostfile": None}, "needs --num-procs"),
                          ({"launcher": "none", "num_procs": 2, "hostfile": None}, "--num-procs needs")]:
        with pytest.raises(RecipeError, match=words):
            check(**kwargs)
    with pytest.raises(RecipeError, match="--hostfile is read by"):
        command("spec.json", launcher="torchrun", num_procs=2, hostfile="h")


def _train(tmp_path) -> model.Train:
    from runner import api
    (tmp_path / "r.yaml").write_text(f"recipe: r\nmodel: {{base: builtin:tiny}}\n"
                                     f"sources: {{a: {{path: {ROOT / 'data' / 'identity.json'}, format: alpaca}}}}\n")
    return api.load(tmp_path / "r.yaml").train
