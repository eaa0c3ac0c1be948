"""Values from the environment. A recipe may say `token=${oc.env:HF_TOKEN}`: the run gets the value, but
no screen, file or cache entry does. The rule is about where a value came from, not what it is called
(HF_AUTH, GITHUB_PAT and DB_CREDENTIALS are as secret as HF_TOKEN), and it follows references:
`${evaluate.generate.prompts[0]}` pointing at such a value is one too.

    paths(data)           which values came from the environment (before interpolation)
    texts(data, paths)    their resolved text, to find them wherever they were copied
    mask(doc, paths)      the document with those values as *** (what `show` and `diff` print)
    redact(obj, texts)    any JSON value with every string that holds one as *** (step parameters,
                          manifests, index files, reports), and a digest that still tells a change
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

MASK = "***"
_ENV = re.compile(r"\$\{\s*oc\.env\s*:")
_REF = re.compile(r"\$\{\s*(?:oc\.select\s*:\s*)?(\.*[A-Za-z_][\w.\[\]-]*)\s*[,}]")
MIN_LEN = 3   # shorter values are not searched for in free text: "8" would mask every 8


def _strings(v: Any, path: tuple):
    if isinstance(v, str):
        yield path, v
    elif isinstance(v, dict):
        for k, x in v.items():
            yield from _strings(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _strings(x, path + (i,))


def _ref_path(ref: str, at: tuple) -> tuple:
    """`${a.b[0]}` -> ("a", "b", 0); a relative `${.x}` / `${..x}` resolves from the node holding it."""
    dots = len(ref) - len(ref.lstrip("."))
    base: tuple = at[:-1][:len(at) - dots] if dots else ()
    parts = re.sub(r"\[(\d+)\]", r".\1", ref.lstrip(".")).split(".")
    return base + tuple(int(p) if p.isdigit() else p for p in parts if p)


def _overlaps(a: tuple, b: tuple) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def paths(data: dict) -> set:
    """Every value that came from the environment: `${oc.env:...}` anywhere in it, or a reference to such a
    value (`${a.b}`, `${oc.select:a.b}`, relative ones), followed to a fixed point."""
    strings = list(_strings(data, ()))
    secret = {p for p, v in strings if _ENV.search(v)}
    refs = {p: [_ref_path(r, p) for r in _REF.findall(v)] for p, v in strings if "${" in v}
    changed = True
    while changed:
        changed = False
        for p, targets in refs.items():
            if p not in secret and any(_overlaps(t, s) for t in targets for s in secret):
                secret.add(p)
                changed = True
    return secret


def texts(data: Any, secret_paths: set | frozenset) -> list[str]:
    """The resolved text of the values at `secret_paths`, longest first."""
    out: set[str] = set()
    for path in secret_paths:
        v: Any = data
        for p in path:
            try:
                v = v[p]
            except (KeyError, IndexError, TypeError):
                v = None
                break
        for _, text in _strings(v, ()) if isinstance(v, (dict, list)) else [((), v)]:
            if text is not None and len(str(text)) >= MIN_LEN:
                out.add(str(text))
    return sorted(out, key=len, reverse=True)


def mask(document: dict[str, Any], secret_paths: frozenset | set = frozenset()) -> dict[str, Any]:
    """A copy of `document` with the values at `secret_paths` shown as ***."""
    def walk(v: Any, path: tuple) -> Any:
        if path in secret_paths:
            return MASK
        if isinstance(v, dict):
            return {k: walk(x, path + (k,)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, path + (i,)) for i, x in enumerate(v)]
        return v
    return walk(dict(document), ())


def redact(value: Any, secret_texts: list[str] | tuple[str, ...], numbers: bool = True) -> tuple[Any, str | None]:
    """(a copy of `value` with every string holding a secret text as ***, a digest of what was masked or
    None). The digest is what tells `plan` a masked value changed without showing it. `numbers`: a number
    equal to a secret is one too; true of a step's parameters (where values from the environment go), not
    of its results (their numbers are counts and metrics, whatever they equal)."""
    if not secret_texts:
        return value, None
    found: list[str] = []

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            if any(t in v for t in secret_texts):
                found.append(v)
                return MASK
            return v
        # a number from the environment (`${oc.decode:${oc.env:LR}}`) is one too, matched whole: a
        # count that merely contains its digits is not masked
        if numbers and isinstance(v, (int, float)) and not isinstance(v, bool) and str(v) in secret_texts:
            found.append(str(v))
            return MASK
        if isinstance(v, dict):
            out: dict = {}
            for k, x in v.items():
                key = walk(k) if isinstance(k, str) else k
                if key == MASK:   # numbered: two masked keys must not become one (one value would be lost)
                    key = f"{MASK}{sum(str(o).startswith(MASK) for o in out)}"
                out[key] = walk(x)
            return out
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    out = walk(value)
    if not found:
        return value, None
    return out, hashlib.sha256("\0".join(found).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def name(recipe) -> str:
    """The recipe's name as a screen shows it: *** when it came from the environment (`recipe: ${oc.env:X}`)."""
    return MASK if any(p[:1] == ("recipe",) for p in recipe.secrets) else recipe.name


def folder(recipe) -> str:
    """The run directory's name (`runs/<name>`), which every screen shows: the recipe's name, or its file's name
    when the recipe's name came from the environment."""
    if name(recipe) != MASK:
        return recipe.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(recipe.file).stem).lstrip(".-") or "recipe"


def scrub(text: str, secret_texts: list[str] | tuple[str, ...]) -> str:
    """Free text (a message) with every secret text in it as ***, also where the message quoted it as Python
    (`{prompt!r}`) or JSON does, which escape what they cannot print."""
    for t in secret_texts:
        for form in sorted(_quoted(t), key=len, reverse=True):
            text = text.replace(form, MASK)
    return text


def _quoted(t: str) -> set[str]:
    import json
    forms = {t, repr(t)[1:-1], json.dumps(t)[1:-1], json.dumps(t, ensure_ascii=False)[1:-1]}
    return {f for f in forms if f}
