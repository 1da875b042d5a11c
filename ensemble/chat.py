"""The `messages` input: OpenAI-style chat JSON, parsed and checked before any
tokenizer work, so a bad request fails in preprocessing with a message that
names the input and the problem (never later, inside the stream).
"""
from __future__ import annotations

import json
from typing import Any

ROLES = ("system", "user", "assistant")


class InputError(ValueError):
    """A request input the server refuses; the message starts with the ensemble input's name."""


def parse_messages(raw: str | bytes, input_name: str = "messages") -> list[dict[str, str]]:
    """JSON text -> [{"role": ..., "content": str}, ...].

    `content` may be a string or a list of {"type": "text", "text": ...} parts;
    parts are joined with "\\n" (as vLLM does), so the template always sees a
    string. Keys other than role/content (e.g. "name") are ignored.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{input_name}: not valid UTF-8 ({_describe_unicode_error(err)})") from None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{input_name}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno} "
                         f"(char {err.pos})") from None
    return validate_messages(parsed, input_name)


def validate_messages(parsed: Any, input_name: str = "messages") -> list[dict[str, str]]:
    """Check an already decoded JSON value; returns normalized messages."""
    if not isinstance(parsed, list):
        raise InputError(f"{input_name}: must be a JSON list of {{\"role\", \"content\"}} objects, "
                         f"got {_json_type(parsed)}")
    if not parsed:
        raise InputError(f"{input_name}: must contain at least one message, got an empty list")
    return [_validate_message(item, f"{input_name}[{index}]") for index, item in enumerate(parsed)]


def _validate_message(item: Any, where: str) -> dict[str, str]:
    if not isinstance(item, dict):
        raise InputError(f"{where}: must be an object with \"role\" and \"content\", got {_json_type(item)}")
    for key in ("role", "content"):
        if key not in item:
            raise InputError(f"{where}: missing \"{key}\"")
    role = item["role"]
    if role not in ROLES:
        raise InputError(f"{where}.role: must be one of {', '.join(ROLES)}, got {json.dumps(role)}")
    return {"role": role, "content": _content_text(item["content"], f"{where}.content")}


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InputError(f"{where}: must be a string or a list of {{\"type\": \"text\", \"text\": ...}} parts, "
                         f"got {_json_type(content)}")
    texts = []
    for index, part in enumerate(content):
        part_where = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise InputError(f"{part_where}: must be an object {{\"type\": \"text\", \"text\": ...}}, "
                             f"got {_json_type(part)}")
        if part.get("type") != "text":
            raise InputError(f"{part_where}.type: only \"text\" parts are supported, "
                             f"got {json.dumps(part.get('type'))}")
        text = part.get("text")
        if not isinstance(text, str):
            raise InputError(f"{part_where}.text: must be a string, got {_json_type(text)}")
        texts.append(text)
    return "\n".join(texts)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _describe_unicode_error(err: UnicodeDecodeError) -> str:
    bad = err.object[err.start:err.end]
    return f"byte 0x{bad[0]:02x} at position {err.start}" if bad else f"at position {err.start}"


def decode_utf8(raw: bytes | str, input_name: str) -> str:
    """Bytes from a Triton STRING tensor -> str, or an error naming the input."""
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{input_name}: not valid UTF-8 ({_describe_unicode_error(err)})") from None
