"""The floors pyproject.toml declares for the training libraries, for `make test-min`.

    python .ci/min_constraints.py          pip constraints pinning each to its floor (`name>=X` -> `name==X`)
    python .ci/min_constraints.py --check  exit 1 unless this environment has exactly those versions

torch stays whatever the Makefile installs (the CPU wheel), so it is not pinned here."""
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

TRAINING = ("transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")


def floors() -> dict[str, str]:
    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for dep in deps:
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", dep)
        if m and m.group(1).lower() in TRAINING:
            found[m.group(1).lower()] = m.group(2)
    missing = set(TRAINING) - set(found)
    if missing:
        sys.exit(f"pyproject.toml declares no `>=` floor for {', '.join(sorted(missing))}")
    return found


def main(argv: list[str]) -> int:
    pins = floors()
    if argv == ["--check"]:
        from packaging.version import Version
        wrong = [f"{n} {metadata.version(n)} (want {v})" for n, v in pins.items()
                 if Version(metadata.version(n)) != Version(v)]
        if wrong:
            print("not the declared floors: " + ", ".join(wrong), file=sys.stderr)
            return 1
        print("floors installed: " + ", ".join(f"{n} {v}" for n, v in pins.items()))
        return 0
    print("\n".join(f"{name}=={pins[name]}" for name in TRAINING))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
