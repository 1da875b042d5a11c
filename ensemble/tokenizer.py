"""The tokenizer and chat format, loaded once per model instance (never per request).

Every chat format offers the same interface, so preprocessing and postprocessing never
ask which one they run: `encode_plain`, `encode_prompt` (a raw prompt, as NVIDIA's preprocessing
tokenizes text_input), `render_chat(messages, reasoning_effort=None)`,
`decode`, `eos_token_id`, `pad_token_id`, `vocab_size`, `stop_token_ids` (ids besides eos
that end the assistant's turn), `reasoning_efforts` (accepted values; empty when the format
has none) and `new_output_parser(stop_strings)` (None when the text has no channels; else
a per-request parser splitting answer and reasoning, ensemble/chat_formats/output.py).

Message text is always plain text: a client who types "<|im_start|>" inside a message gets
the tokens of those characters, never the control token, so nobody can forge a turn of the
conversation from inside a message. A raw prompt (`encode_prompt`) is the caller's own
template: its control-token strings are control tokens, as in NVIDIA's preprocessing.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence


class TextTokenizer:
    """The `chatml` format: the checkpoint's tokenizer.json and chat template (transformers)."""

    chat_format = "chatml"
    reasoning_efforts: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()

    def __init__(self, hf_tokenizer):
        if hf_tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja)")
        self._hf = hf_tokenizer
        # The Rust tokenizer: decoding straight through it skips transformers' per-call
        # Python work, which matters because decode runs on every streamed response.
        self._backend = hf_tokenizer.backend_tokenizer
        # transformers switches a flag on the shared Rust tokenizer for every plain-text
        # encode (split_special_tokens); a lock keeps two threads from mixing modes.
        self._encode_lock = threading.Lock()
        self.eos_token_id: int = hf_tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token")
        pad = hf_tokenizer.pad_token_id
        self.pad_token_id: int = self.eos_token_id if pad is None else pad
        self.vocab_size: int = len(hf_tokenizer)

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of `text` as plain text: special-token strings are not control tokens."""
        with self._encode_lock:
            return list(self._hf.encode(text, add_special_tokens=False, split_special_tokens=True))

    def encode_prompt(self, text: str) -> list[int]:
        """A raw prompt as NVIDIA's preprocessing tokenizes text_input: `tokenizer.encode(text,
        add_special_tokens=True)` (its default), so the tokenizer's own rule adds BOS or not and
        control-token strings are control tokens."""
        with self._encode_lock:
            return list(self._hf.encode(text, add_special_tokens=True, split_special_tokens=False))

    def render_chat(self, messages: Sequence[dict[str, str]], reasoning_effort: str | None = None) -> list[int]:
        """The checkpoint's chat template with the generation prompt, tokenized.

        transformers' `sanitize_control_tokens` marks control-token strings inside
        the messages and encodes them as text; everything else is encoded exactly as
        the template's own output, so ordinary chats match `apply_chat_template`.
        """
        if reasoning_effort is not None:
            raise ValueError("reasoning_effort: the chatml format has no reasoning effort setting")
        with self._encode_lock:
            ids = self._hf.apply_chat_template(
                [{"role": m["role"], "content": m["content"]} for m in messages],
                add_generation_prompt=True, tokenize=True, return_dict=False,
                sanitize_control_tokens=True)
        return list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`: special tokens skipped, spaces left as the model wrote them."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=True)

    def new_output_parser(self, stop_strings: Sequence[str] = ()) -> None:
        return None   # no channels: postprocessing decodes statelessly (ensemble/detokenizer.py)


def load_tokenizer(directory: str | os.PathLike, chat_format: str | None = None,
                   reasoning_effort: str | None = None):
    """The chat format's tokenizer (`chat_format` None: the one the folder's config.json
    implies). Never touches the network. `reasoning_effort`: the default for requests
    that send none (formats that have the setting only)."""
    from ensemble.chat_formats import CHAT_FORMATS, detect_chat_format

    chat_format = chat_format or detect_chat_format(directory)
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"chat_format must be one of {', '.join(CHAT_FORMATS)}, got {chat_format!r}")
    if chat_format == "harmony":
        from ensemble.chat_formats.harmony import HarmonyTokenizer

        return HarmonyTokenizer(reasoning_effort)
    if reasoning_effort is not None:
        raise ValueError(f"reasoning_effort: the {chat_format} chat format has no reasoning effort setting "
                         "(remove it from the engine config)")
    if chat_format == "qwen3":
        from ensemble.chat_formats.qwen3 import Qwen3Tokenizer

        return Qwen3Tokenizer()
    return _load_hf_tokenizer(directory)


def _load_hf_tokenizer(directory: str | os.PathLike) -> TextTokenizer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer  # slow import (~1 s): only where a tokenizer is needed

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory} (run `triton-eagle assets --out models`)")
    hf_tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if not getattr(hf_tokenizer, "is_fast", False):
        raise ValueError(f"{directory}: expected a fast (tokenizers) tokenizer, got {type(hf_tokenizer).__name__}")
    return TextTokenizer(hf_tokenizer)
