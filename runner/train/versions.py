"""Are the installed training libraries in the range we declare (and test: `make test-min`)?

Checked when a run starts, from package metadata only (importlib.metadata: no torch, no
transformers imported), so a too-old or too-new library is one line naming the package and the
version needed instead of a TypeError deep inside a training step. The ranges have one home,
pyproject.toml: read from the source checkout when there is one (as the schema is), else from the
installed distribution's metadata.
"""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from ..errors import RecipeError

TRAINING = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def declared() -> dict[str, str]:
    """{package: specifier} for the training libraries, e.g. {"trl": ">=1.0"}."""
    if PYPROJECT.is_file():
        import tomllib
        deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    else:
        deps = [d for d in (metadata.requires("recipe") or []) if "extra ==" not in d]
    out = {}
    for dep in deps:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*([^;]*)", dep)
        if m and m.group(1).lower() in TRAINING:
            out[m.group(1).lower()] = m.group(2).strip()
    return out


def problems(installed=None) -> list[str]:
    """One line per training library that is missing or outside its declared range.
    `installed(name)` gives a version string or raises PackageNotFoundError (default: metadata.version)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    installed = installed or metadata.version
    out = []
    for name, spec in declared().items():
        try:
            version = installed(name)
        except metadata.PackageNotFoundError:
            out.append(f"{name} is not installed; recipe needs {name}{spec}: pip install '{name}{spec}'")
            continue
        # local labels (2.13.0+cpu) are builds of the same release
        if spec and Version(Version(version).base_version) not in SpecifierSet(spec):
            out.append(f"{name} {version} is installed but recipe needs {name}{spec}: pip install '{name}{spec}'")
    return out


def check() -> None:
    """Raise a RecipeError (exit 2, one line per library) when the training libraries do not fit."""
    found = problems()
    if found:
        raise RecipeError("; ".join(found))
