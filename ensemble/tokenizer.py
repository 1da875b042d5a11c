"""The checkpoint's tokenizer, loaded once per model instance (never per request).

User text is always plain text: a client who types "<|im_start|>" gets the
tokens of those characters, never the control token, so nobody can forge a
turn of the conversation from inside a message.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence


class TextTokenizer:
    """What the Triton models need from a checkpoint's tokenizer (transformers' fast tokenizer)."""

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

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The checkpoint's chat template with the generation prompt, tokenized.

        transformers' `sanitize_control_tokens` marks control-token strings inside
        the messages and encodes them as text; everything else is encoded exactly as
        the template's own output, so ordinary chats match `apply_chat_template`.
        """
        with self._encode_lock:
            ids = self._hf.apply_chat_template(
                [{"role": m["role"], "content": m["content"]} for m in messages],
                add_generation_prompt=True, tokenize=True, return_dict=False,
                sanitize_control_tokens=True)
        return list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`: special tokens skipped, spaces left as the model wrote them."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=True)


def load_tokenizer(directory: str | os.PathLike) -> TextTokenizer:
    """Load the tokenizer of a local checkpoint folder; never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer  # slow import (~1 s): only where a tokenizer is needed

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory} (run `triton-eagle assets --out models`)")
    hf_tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if not getattr(hf_tokenizer, "is_fast", False):
        raise ValueError(f"{directory}: expected a fast (tokenizers) tokenizer, got {type(hf_tokenizer).__name__}")
    return TextTokenizer(hf_tokenizer)
