"""What a format's mapper is: raw row -> (messages, meta, id or None), or a MapError naming why the row
cannot be a record (its code is the quarantine reason)."""
from __future__ import annotations

from typing import Any, Callable

Messages = list[dict[str, str]]
Mapper = Callable[[dict[str, Any]], tuple[Messages, dict[str, Any], str | None]]


class MapError(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}
