"""The explicit meta-learning task layout (FOMAML-SFT data guide): per task, support/query/test files
with `prompt`, `response` and optional `metadata` (a JSON object or its text), as parquet or JSONL.
Runs write their tasks in the same layout (tasks/<task>/{support,query,test}.parquet and
few_shot/<task>_<k>shot_seed<s>.parquet), so a run's tasks can be read back as an explicit recipe.

Only pyarrow (for parquet) is imported, and only when a file is read: validation stays light."""
from __future__ import annotations

import json
from pathlib import Path

COLUMNS = ("prompt", "response", "metadata")
REQUIRED = ("prompt", "response")


def read_prompt_response(path: Path) -> tuple[list[tuple[str, str]], str | None]:
    """((prompt, response) per usable row, a problem or None). Rows missing either text are not
    counted (the split step quarantines them)."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq
            table = pq.read_table(path)
            missing = [c for c in REQUIRED if c not in table.column_names]
            if missing:
                return [], f"no {' or '.join(repr(c) for c in missing)} column (has {', '.join(table.column_names)})"
            rows = zip(table.column("prompt").to_pylist(), table.column("response").to_pylist())
        elif path.suffix in (".jsonl", ".json"):
            # a bad line is the split step's to quarantine (with its line number), not a reason to refuse the file
            records = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
            rows = ((r.get("prompt"), r.get("response")) for r in records if isinstance(r, dict))
        else:
            return [], "explicit task files are .parquet or .jsonl"
    except (OSError, ValueError) as e:
        return [], f"cannot read it: {e}"
    out = [(p, r) for p, r in rows if isinstance(p, str) and isinstance(r, str) and p and r]
    if not out:
        return [], "no rows with a prompt and a response"
    return out, None


def to_row(record: dict) -> dict:
    """A split record ({id, messages, meta}) in the layout: the user turns are the prompt, the last
    assistant turn the response, meta the metadata (JSON text)."""
    msgs = record["messages"]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    prompt = "\n".join(m["content"] for m in msgs[:last] if m["role"] == "user")
    return {"prompt": prompt, "response": msgs[last]["content"],
            "metadata": json.dumps(record.get("meta") or {}, ensure_ascii=False, sort_keys=True)}


def write(path: Path, records: list[dict]) -> None:
    """Records as a prompt/response/metadata parquet file (written the same way every time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [to_row(r) for r in records]
    table = pa.table({c: pa.array([r[c] for r in rows], type=pa.string()) for c in COLUMNS})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", write_statistics=False)
