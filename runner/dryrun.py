"""What `recipe run --dry-run` prints: rows per source through the funnel, and rows/tokens per stage,
after the data steps ran and the render check passed — everything short of training."""
from __future__ import annotations


def _rows(records, name: str, src: str | None = None):
    rec = next((r for r in records if r.name == name), None)
    if rec is None:
        return None
    s = rec.stats or {}
    if src is None:
        return s.get("rows_out")
    return s.get("by_source", {}).get(src, {}).get("rows_out")


def summary(recipe, records) -> str:
    lines = ["dry run: data steps done and the render check passed; training was not started", ""]
    split = next((r for r in records if r.name == "split"), None)
    ev = (split.stats or {}).get("eval", {}) if split else {}
    head = f"{'source':<14}{'loaded':>9}{'filtered':>10}{'deduped':>9}{'eval':>7}"
    lines.append(head)
    for src in recipe.sources:
        loaded = _rows(records, f"load.{src}")
        filtered = _rows(records, f"filter.{src}")
        deduped = _rows(records, "dedup", src)
        fmt = lambda v: f"{v:,}" if isinstance(v, int) else "-"  # noqa: E731
        lines.append(f"{src:<14}{fmt(loaded):>9}{fmt(filtered):>10}{fmt(deduped):>9}{fmt(ev.get(src)):>7}")
    for st in recipe.stages:
        r = next((x for x in records if x.name == f"render.{st.name}"), None)
        if r is None:
            continue
        s = r.stats
        t = s.get("tokens", {})
        lines += ["", f"stage {st.name}: {s['rows']['train']:,} train rows, {t.get('train', 0):,} tokens "
                      f"({t.get('trained', 0):,} trained), {t.get('truncated', 0):,} truncated at "
                      f"{recipe.template.max_length}"]
        m = next((x for x in records if x.name == f"mix.{st.name}"), None)
        mix = (m.stats or {}).get("mix", {}) if m else {}
        for src, share in sorted(mix.get("achieved", {}).items()):
            req = mix.get("requested", {}).get(src)
            n = s.get("by_source", {}).get(src, {}).get("rows_out", 0)
            lines.append(f"  {src:<12} {n:>8,} rows  {share:7.1%}" + (f" (requested {req:.1%})" if req is not None else ""))
    return "\n".join(lines) + "\n"
