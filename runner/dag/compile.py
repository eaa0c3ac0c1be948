"""Recipe -> DAG of steps. Pure: no I/O, no heavy imports, the same recipe always gives the same
graph, so the plan and the diff are functions of the recipe alone (golden-tested).

    load.<src> -> filter.<src> -> dedup -> split -> mix.<stage> -> render.<stage> -> train.<stage>
                                                                                   -> eval.<stage>
                                                                   last train  ->  export
Sources are split into train/eval *before* mixing, so every stage is evaluated on the same held-out
rows of every source (the forgetting table) and no stage trains on another stage's eval rows."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping

from ..data import hub
from ..recipe import model
from ..recipe.model import CHAT_TEMPLATES, DEEPSPEED_PRESETS, successor_ewc
from ..steps.base import Step

@dataclass(frozen=True)
class Graph:
    recipe: str
    steps: tuple[Step, ...]        # topological order
    notes: tuple[str, ...] = ()    # things the user should know about the plan
    secrets: tuple[str, ...] = ()  # texts of values from the environment: masked wherever a step's params go

    def __getitem__(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def descendants(self, name: str) -> set[str]:
        out = {name}
        for s in self.steps:
            if out & set(s.inputs):
                out.add(s.name)
        return out

    def ancestors(self, name: str) -> set[str]:
        out, todo = set(), [name]
        while todo:
            for i in self[todo.pop()].inputs:
                if i not in out:
                    out.add(i)
                    todo.append(i)
        return out


def _plain(obj: Any) -> Any:
    """Typed objects -> JSON data (the fingerprinted form of exactly what a step reads)."""
    if dataclasses.is_dataclass(obj):
        return {f.name.rstrip("_"): _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    return obj


def _step(name: str, kind: str, inputs: list[str] | tuple[str, ...], params: dict, *, stage: str | None = None,
          source: str | None = None, files: tuple[str, ...] = ()) -> Step:
    return Step(name=name, kind=kind, stage=stage, source=source, inputs=tuple(inputs),
                params_json=json.dumps(_plain(params), sort_keys=True, ensure_ascii=False, separators=(",", ":")),
                files=files)


def _tokenizer_identity(r: model.Recipe) -> dict:
    """What decides token counts: the tokenizer (model id/path) and the template."""
    return {"model": r.model.base, "template": r.template}


def _template_files(r: model.Recipe) -> tuple[str, ...]:
    return () if r.template.chat in CHAT_TEMPLATES else (r.template.chat,)


def _model_files(r: model.Recipe, *, weights: bool) -> tuple[str, ...]:
    """A local model.base is content too: its tokenizer/config files, and its weights for training.
    (A hub id is identified by its name; builtin:tiny by the package version.)"""
    base = r.model.base
    if not base.startswith(("./", "../", "/")):
        return ()
    return (f"{base}/*",) if weights else (f"{base}/*.json", f"{base}/*.jinja", f"{base}/*.model", f"{base}/*.txt")


_HUB_KEYS = ("dataset", "config", "split", "revision", "data_files", "streaming", "shuffle")


def _load_params(name: str, s: model.Source, seed: int) -> dict:
    params: dict = {"source": _plain(s), "name": name}
    if not s.placeholders:   # a key added later: without values, the key stays what it was
        del params["source"]["placeholders"]
    if s.dataset is None:   # a local source's key stays what it was before hub sources existed
        params["source"] = {k: v for k, v in params["source"].items() if k not in _HUB_KEYS}
    else:
        del params["source"]["revision"]   # the commit it names is fingerprinted instead (see _source_files)
        if s.shuffle is not None:
            params["seed"] = seed   # the sample drawn
    return params


def _source_files(s: model.Source) -> tuple[str, ...]:
    """What a load step reads: a local path's bytes; for a hub dataset, the commit its revision
    resolves to (an hf://datasets/<id>@<revision> entry, see runner.data.hub); a remote URL is
    identified by the URL itself."""
    if s.dataset is not None:
        return (hub.uri(s),)
    return () if hub.is_remote(s.path) else (s.path,)


def _secret_texts(r: model.Recipe) -> tuple[str, ...]:
    from ..recipe import secrets
    return tuple(secrets.texts(r.document, r.secrets))


def compile_recipe(r: model.Recipe) -> Graph:
    steps: list[Step] = []
    notes: list[str] = []
    last: dict[str, str] = {}  # source -> its latest data step

    for src, s in r.sources.items():
        steps.append(_step(f"load.{src}", "load", [], _load_params(src, s, r.seed), source=src, files=_source_files(s)))
        last[src] = f"load.{src}"
        row = r.row_filters(src)
        if row:
            params: dict = {"filters": row}
            files: tuple[str, ...] = tuple(f.model_path for f in row if isinstance(f, model.ToxicityFilter))
            files += tuple(f.file for f in row if isinstance(f, model.ExcludeFilter))
            counted = [f for f in row if isinstance(f, model.LengthFilter) and f.max_tokens is not None]
            if counted:
                # only what changes a token count: not train_on, and max_length only when it is the limit
                params["tokens"] = {"model": r.model.base, "chat": r.template.chat, "system": r.template.system}
                if any(f.max_tokens == "max_length" for f in counted):
                    params["tokens"]["max_length"] = r.template.max_length
                files += _template_files(r) + _model_files(r, weights=False)
            steps.append(_step(f"filter.{src}", "filter", [last[src]], params, source=src, files=files))
            last[src] = f"filter.{src}"

    data_inputs = [last[s] for s in r.sources]
    dedups = [f for f in r.filters if isinstance(f, model.DedupFilter)]
    if dedups:
        steps.append(_step("dedup", "dedup", data_inputs, {
            "filters": dedups, "priority": {k: s.priority for k, s in r.sources.items()}, "order": list(r.sources)}))
        data_inputs = ["dedup"]

    if r.meta:
        task_files = () if isinstance(r.meta.tasks, model.DerivedTasks) else tuple(
            f for t in r.meta.tasks for part in (t.support, t.query, t.test) for f in part)
        # only what the split reads: the tasks and how they are split (not the training settings)
        steps.append(_step("split", "split", data_inputs, {"meta": {"tasks": r.meta.tasks, "split": r.meta.split},
                                                           "seed": r.seed, "order": list(r.sources)},
                           files=task_files))
        _meta_steps(r, steps)
        return Graph(r.name, tuple(steps), tuple(notes), _secret_texts(r))

    # source order matters: a text found in two sources follows its first copy to one side
    steps.append(_step("split", "split", data_inputs, {"split": r.split, "seed": r.seed, "order": list(r.sources)}))

    active = [st for st in r.stages if not st.skip]
    trained: dict[str, str] = {}
    prev: str | None = None
    weights = _builtin_weights(r)
    for st in active:
        members = {k: r.expand(k) for k in (st.mix or {})}
        steps.append(_step(f"mix.{st.name}", "mix", ["split"], {
            "mix": st.mix, "groups": members, "size": st.size, "sampling": r.sampling, "seed": r.seed,
            "sources": list(r.sources), "stage": st.name}, stage=st.name))   # the draw is seeded by stage name
        steps.append(_step(f"render.{st.name}", "render", [f"mix.{st.name}", "split"], {
            **_tokenizer_identity(r), "seed": r.seed}, stage=st.name,
            files=_template_files(r) + _model_files(r, weights=False)))
        start = st.from_ or prev
        if start is not None and start not in trained:
            # `from` names a skipped stage: its weights are model.init_from (a corrective rerun)
            start = None
        inputs = [f"render.{st.name}"] + ([trained[start]] if start else [])
        init_from = None if start else r.model.init_from
        # EWC anchors to the stage this one starts from: a stage trained in this run, or a saved one
        # (model.init_from, whose final/ carries ewc_state.safetensors when a later stage asked for it)
        ewc = st.ewc if (start or init_from) else None
        # report_to only adds loggers: it changes no artifact, so it does not invalidate a trained stage
        # fisher_for: a later stage's ewc decides whether this stage leaves a Fisher behind, and from how
        # many rows. Of `output`, only the checkpoints kept matter here (merge is the export's business).
        train_params = {"train": dataclasses.replace(st.train, report_to=()),
                        "model": dataclasses.replace(r.model, init_from=init_from),
                        "template": r.template, "ewc": ewc, "fisher_for": _fisher_for(r, st), "seed": r.seed,
                        "save_total_limit": r.output.save_total_limit, **weights}
        if st.ewc is not None and ewc is None:
            notes.append(f"stage {st.name}: ewc needs an earlier stage's weights and Fisher, and this run starts "
                         "from the base model; EWC is off for this stage")
        files = _deepspeed_files(st.train) + ((init_from,) if init_from else ()) + _model_files(r, weights=True)
        if st is active[0] and r.evaluate.before:
            # the starting model on the same eval rows: the row "before" of the forgetting table
            steps.append(_step("eval.before", "evaluate", [f"render.{st.name}", "split"], {
                "evaluate": dataclasses.replace(r.evaluate, every_stage=True, before=True),
                "template": r.template,
                "model": {"base": r.model.base, "init_from": r.model.init_from, "dtype": r.model.dtype},
                "seed": r.seed, **weights},
                files=((r.model.init_from,) if r.model.init_from else ()) + _template_files(r)
                + _model_files(r, weights=True)))
        steps.append(_step(f"train.{st.name}", "train", inputs, train_params, stage=st.name, files=files))
        trained[st.name] = f"train.{st.name}"
        prev = st.name
        if r.evaluate.every_stage or st is active[-1]:
            steps.append(_step(f"eval.{st.name}", "evaluate", [f"train.{st.name}", f"render.{st.name}", "split"], {
                "evaluate": dataclasses.replace(r.evaluate, every_stage=True, before=True),   # flags that shape the graph only
                "template": r.template, "model": r.model.base, "seed": r.seed, **weights},
                stage=st.name))
    if active:
        steps.append(_step("export", "export", [f"train.{active[-1].name}"], {"output": r.output}))
    return Graph(r.name, tuple(steps), tuple(notes), _secret_texts(r))


def _meta_steps(r: model.Recipe, steps: list[Step]) -> None:
    """split -> tasks (layout + held-out choice) -> train.meta (FOMAML), train.control (multi-task SFT)
    -> eval.few_shot (all three models adapted to the held-out tasks)."""
    m, train = r.meta, r.stages[0].train
    fs = m.few_shot_eval
    steps.append(_step("tasks", "tasks", ["split"], {"held_out_tasks": fs.held_out_tasks, "shots": fs.shots,
                                                      "seeds": fs.seeds, "seed": r.seed}))
    common = {"inner": m.inner, "outer": m.outer, "total_steps": m.total_steps,
              "train": dataclasses.replace(train, report_to=()), "model": r.model, "template": r.template,
              "seed": r.seed, "save_total_limit": r.output.save_total_limit, **_builtin_weights(r)}
    files = _deepspeed_files(train) + _model_files(r, weights=True)
    steps.append(_step("train.meta", "meta_train", ["tasks", "split"], {**common, "role": "meta"}, files=files))
    models = ["train.meta"]
    if fs.sft_control:
        # the control never runs the inner loop: its learning rate is not its parameter
        control = {**common, "inner": {"steps": m.inner.steps, "batch_size": m.inner.batch_size}, "role": "control"}
        steps.append(_step("train.control", "meta_train", ["tasks", "split"], control, files=files))
        models.append("train.control")
    steps.append(_step("eval.few_shot", "few_shot", ["tasks", "split", *models], {
        "few_shot_eval": fs, "inner": m.inner, "model": r.model, "template": r.template, "seed": r.seed,
        **_builtin_weights(r)},
        files=_model_files(r, weights=True)))


def _fisher_for(r: model.Recipe, st: model.Stage) -> dict | None:
    """What of a later stage's ewc shapes the Fisher this stage leaves: not lambda, so a lambda sweep
    reuses the trained stage."""
    ewc = successor_ewc(r, st)
    return None if ewc is None else {"fisher_samples": ewc.fisher_samples, "gamma": ewc.gamma}


def _builtin_weights(r: model.Recipe) -> dict:
    """A builtin model's shipped weights are content too: their digest, from the manifest beside them."""
    from ..builtin import weights_digest
    digest = weights_digest(r.model.base)
    return {"base_weights": digest} if digest else {}


def _deepspeed_files(t: model.Train) -> tuple[str, ...]:
    return (t.deepspeed,) if t.deepspeed and t.deepspeed not in DEEPSPEED_PRESETS else ()
