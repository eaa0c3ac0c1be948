"""`recipe diff --git REV [PATH ...]`: REV's side of the repository rebuilt in a temporary directory
(`_materialise`), so `extends`, data paths and file fingerprints resolve on each side from that side's own
files; then every recipe under the paths that differs is compared."""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

import yaml

from ..errors import RecipeError
from .impact import RecipeDiff, Side, _relative, diff_sides, load_side

def _git(top: Path | str, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=top, input=stdin, capture_output=True, check=True)
    except FileNotFoundError:
        raise RecipeError("--git needs the `git` command") from None
    except subprocess.CalledProcessError as e:
        raise RecipeError(f"git {' '.join(args[:2])}: {e.stderr.decode(errors='replace').strip()}") from None
    return done.stdout


def _z(out: bytes) -> list[str]:
    return [p for p in out.decode().split("\0") if p]


def _materialise(rev: str, top: Path, root: Path) -> list[str]:
    """REV's side of the repository under `root`, built from as little as possible:
    - from REV itself: every YAML file (a recipe and the bases it extends must be read from REV, and a
      symlink would resolve back into the working tree), and every tracked file that differs from REV;
    - everything else is linked to the working tree: tracked files identical at REV, and ignored files
      (downloaded data, runs/ checkpoints), which git does not version, so both sides see the same bytes;
    - files added since REV are absent.
    So validation on the REV side is exact, not lenient: a data file that changed reads as changed.
    Returns the files at REV."""
    tree = {}
    for entry in _z(_git(top, "ls-tree", "-r", "-z", rev)):
        meta, path = entry.split("\t", 1)
        mode, kind, _ = meta.split()
        if kind == "blob":
            tree[path] = mode
    differ = set(_z(_git(top, "diff", "--name-only", "--no-renames", "-z", rev, "--"))) \
        | set(_z(_git(top, "ls-files", "--others", "--exclude-standard", "-z")))
    real = [p for p in tree if p.endswith((".yaml", ".yml")) or p in differ]
    hidden = differ - set(tree)
    # One `git cat-file --batch` for every file, streamed: a changed data file may be large.
    with subprocess.Popen(["git", "cat-file", "--batch"], cwd=top, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as git:
        for p in real:
            git.stdin.write(f"{rev}:{p}\n".encode())
            git.stdin.flush()
            left = int(git.stdout.readline().split()[2])
            dst = root / p
            dst.parent.mkdir(parents=True, exist_ok=True)
            if tree[p] == "120000":  # a symlink: its blob is the target
                os.symlink(git.stdout.read(left).decode(), dst)
            else:
                with open(dst, "wb") as f:
                    while left:
                        left -= f.write(git.stdout.read(min(left, 1 << 20)))
            git.stdout.read(1)  # the newline that ends each object
        git.stdin.close()
    # Directories holding a REV file or hiding an added one are real; their other entries are links.
    dirs = {str(q) for p in (*real, *hidden) for q in PurePosixPath(p).parents}
    taken = set(real) | hidden | dirs
    for d in sorted(dirs):
        (root / d).mkdir(parents=True, exist_ok=True)
        here = top / d
        if not here.is_dir() or (d != "." and here.is_symlink()):
            continue
        for entry in os.scandir(here):
            rel = entry.name if d == "." else f"{d}/{entry.name}"
            if entry.name != ".git" and rel not in taken:
                os.symlink(entry.path, root / rel)
    return list(tree)


@contextlib.contextmanager
def _cwd(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _is_recipe(file: Path) -> bool:
    """A YAML mapping with `recipe:` or `extends:`; a file that does not parse counts (and is reported)."""
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return True
    return isinstance(data, dict) and ("recipe" in data or "extends" in data)


def diff_git(rev: str, paths: list[str], overrides: tuple[str, ...] = (), cache_dir: str | None = None,
             overrides_a: tuple[str, ...] = (), overrides_b: tuple[str, ...] = ()) -> list[RecipeDiff]:
    """Every recipe under `paths` that differs between REV and the working tree."""
    try:
        top = Path(_git(".", "rev-parse", "--show-toplevel").decode().strip())
    except RecipeError:
        raise RecipeError("--git: not inside a git repository") from None
    try:
        _git(top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RecipeError:
        raise RecipeError(f"--git: unknown revision '{rev}'") from None
    specs = []
    for p in paths or ["."]:
        rel = os.path.relpath(Path(p).resolve(), top)
        if rel.startswith(".."):
            raise RecipeError(f"--git: {p} is outside the repository {top}")
        specs.append(PurePosixPath(rel))

    def under(p: str, spec: PurePosixPath) -> bool:
        return spec == PurePosixPath(".") or PurePosixPath(p).is_relative_to(spec)

    cache_dir = str(Path(cache_dir).resolve()) if cache_dir else None
    # From the top of the repository, the loader names working-tree files repository-relative, as REV's are.
    with tempfile.TemporaryDirectory(prefix="recipe-diff-") as tmp, _cwd(top):
        root = Path(tmp)
        tree = _materialise(rev, top, root)
        for spec, given in zip(specs, paths):
            if not (top / spec).exists() and not any(under(p, spec) for p in tree):
                raise RecipeError(f"--git: {given} exists neither in the working tree nor at {rev}")
        wanted = lambda p: p.endswith((".yaml", ".yml")) and any(under(p, s) for s in specs)  # noqa: E731
        at_rev = [p for p in tree if wanted(p)]
        now = [p for p in _z(_git(top, "ls-files", "--cached", "--others", "--exclude-standard", "-z"))
               if wanted(p) and (top / p).is_file()]
        out = []
        for p in sorted(set(at_rev) | set(now)):
            a = _git_side(root / p, f"{rev}:{p}", root, overrides + overrides_a, cache_dir, top / p) \
                if p in at_rev and _is_recipe(root / p) else None
            b = _git_side(top / p, p, top, overrides + overrides_b, cache_dir, top / p) \
                if p in now and _is_recipe(top / p) else None
            if a is None and b is None:
                continue
            title = p + (" (added)" if a is None else " (deleted)" if b is None else "")
            if isinstance(a, str) or isinstance(b, str):  # a side that does not even load
                if a != b:
                    errors = [f"{tag} does not load: {e}" for tag, e in (("before", a), ("after", b)) if isinstance(e, str)]
                    out.append(RecipeDiff(title, f"{rev}:{p}", p, [], [], [], {}, [], errors))
                continue
            d = diff_sides(a, b, title)
            if d.differs:
                out.append(d)
        return out


def _git_side(file: Path, label: str, root: Path, overrides, cache_dir, anchor: Path) -> Side | str:
    """A Side, or the error that stops the file from loading."""
    try:
        return load_side(file, label, overrides, cache_dir, root=root, cache_anchor=anchor)
    except RecipeError as e:
        return _relative("; ".join(str(e).splitlines()), root)
