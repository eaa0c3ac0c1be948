"""The package's import graph: no cycle, and no arrow from a lower layer to a higher one. Read from the
source (every import, also those inside functions), so a lazy import cannot hide an upward dependency."""
from __future__ import annotations

import ast
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[1] / "runner"

# Bottom up. A module may import its own layer or a lower one; `runner` itself holds only __version__.
LAYERS = ["runner", "runner.errors", "runner.paths", "runner.environment",
          "runner.sources",   # source kinds: identity and raw rows; validation reads the hub cache's layout
          "runner.recipe", "runner.builtin", "runner.chat",
          "runner.data", "runner.executors",
          "runner.train", "runner.trainers", "runner.steps", "runner.dag", "runner.diff", "runner.api", "runner.cli",
          "runner.__main__",
          "runner.tools"]   # scripts that make the shipped model's files (python -m runner.tools.make_*)


# A layer is a whole package: a module placed apart from its package is an exemption.
MODULES_APART: set[str] = set()   # none: every layer is a whole package


def _module(path: Path) -> str:
    parts = list(path.relative_to(RUNNER.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in sorted(RUNNER.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The runner modules `name` imports (a package's submodule when `from package import submodule`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "runner"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "runner":
                target = node.module
            else:
                continue
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
            out |= subs or {target}
            if subs and len(subs) < len(node.names):
                out.add(target)
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _layer(module: str) -> int:
    best = max((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), key=len)
    return LAYERS.index(best)


def test_every_module_has_a_layer():
    assert all(_layer(m) >= 0 for m in _graph())
    assert {m.split(".")[1] for m in _graph() if m != "runner"} <= {x.split(".")[1] for x in LAYERS[1:]}


def test_no_import_goes_up_a_layer():
    up = sorted(f"{a} -> {b}" for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a))
    assert not up, "imports from a lower layer to a higher one:\n" + "\n".join(up)


def test_no_import_cycle():
    graph, state, stack, cycles = _graph(), {}, [], []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_lazy_and_relative_imports():
    """The graph is read right: a few edges that exist in the code, lazy ones included."""
    g = _graph()
    assert "runner.dag.compile" in g["runner.dag.fingerprint"]          # from .compile import Graph
    assert "runner.trainers" in g["runner.steps.train"]                 # inside run(): from ..trainers import run
    assert "runner.train.process" in g["runner.trainers.fomaml.driver"]  # from ...train.process import
    assert "runner.steps.base" in g["runner.dag.compile"]              # from ..steps.base import Step


def test_every_package_is_shipped():
    """pyproject.toml lists the packages a wheel holds by hand: a new package (a layer, a step kind's
    folder) missing there works from a checkout and is absent once installed."""
    import tomllib
    config = tomllib.loads((RUNNER.parent / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    packages = {_module(p) for p in RUNNER.rglob("__init__.py")}
    assert packages <= listed, f"add to pyproject.toml's packages: {sorted(packages - listed)}"
    assert "runner.schemas" in listed and "schemas" in config["package-dir"]["runner.schemas"]


def test_a_layer_is_a_whole_package():
    apart = {layer for layer in LAYERS if layer.count(".") > 1}   # runner.<package or top-level module> is whole
    assert apart <= MODULES_APART, f"modules given a layer apart from their package: {sorted(apart - MODULES_APART)}"
    assert MODULES_APART <= set(LAYERS), "an exemption that is gone leaves MODULES_APART too"
