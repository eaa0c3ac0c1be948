"""`template.chat` and `model`: a chat template is a shipped name or a .jinja file, a local base model
exists, and an adapter setting makes sense for its type."""
from __future__ import annotations

from pathlib import Path

from ..model import CHAT_TEMPLATES
from .problems import Problems, did_you_mean


def check_template_and_model(d: dict, doc_dir: Path, out: Problems) -> None:
    chat = d["template"]["chat"]
    if chat not in CHAT_TEMPLATES:
        if not chat.endswith(".jinja"):
            out.add(("template", "chat"), f"template.chat: unknown template '{chat}'{did_you_mean(chat, CHAT_TEMPLATES)} (or a path to a .jinja file)")
        elif not (doc_dir / chat).is_file():
            out.add(("template", "chat"), f"template.chat: template file not found: {chat}")
    base = d["model"]["base"]
    if base.startswith((".", "/")) and not (doc_dir / base).exists():
        out.add(("model", "base"), f"model.base: no model at {base}")
    adapter = d["model"]["adapter"]
    if adapter["type"] == "none" and adapter["trainable_tokens"]:
        out.add(("model", "adapter", "trainable_tokens"), "model.adapter.trainable_tokens: with adapter type none "
                "every embedding row trains already; remove trainable_tokens or use type lora")
