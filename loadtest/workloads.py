"""What the simulated users ask: MT-Bench, a synthetic fixed-length workload, or the
user's own prompts from a JSONL file. Each is a list of prompts the users cycle through.

Chats go through `messages` (rendered with the model's chat template); `text` is sent as
text_input, the raw prompt (no template), as NVIDIA's ensemble defines it."""
from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from triton_eagle.client import request_fields

MTBENCH = "mt-bench"
SYNTHETIC = "synthetic"
# Common English words that GPT-style byte-level BPEs (SmolLM2's, o200k, Qwen's) encode as one
# token each with their leading space, so N words make a prompt of about N tokens.
SYNTHETIC_WORDS = (
    "the of and to in is that for it as with was on be by at this are from or have an they which "
    "one you were all we her she there would their will when who him been has more if no out so "
    "said what up its about than into them can only other new some could time these two may then "
    "do first any my now such like our over man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people how "
    "too little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come since "
    "against go came right used take three").split()
SYNTHETIC_POOL = 64   # distinct synthetic prompts, so no two users send the same text at once


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    category: str
    text: str | None = None
    messages: list[dict] | None = None
    max_tokens: int | None = None
    min_tokens: int | None = None

    def fields(self, default_max_tokens: int) -> dict:
        """Ensemble inputs (request_fields names) for one streamed request."""
        return request_fields(self.text, messages=self.messages, stream=True,
                              max_tokens=self.max_tokens or default_max_tokens, min_tokens=self.min_tokens)


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: tuple[Prompt, ...]

    def cycle(self, offset: int = 0) -> Iterator[Prompt]:
        """Endless, starting at `offset` (workers start apart, so they do not ask in lockstep)."""
        start = offset % len(self.prompts)
        return itertools.cycle(self.prompts[start:] + self.prompts[:start])


def mtbench() -> Workload:
    """The 80 MT-Bench first turns as one-message chats, categories interleaved so any stretch mixes them."""
    from triton_eagle.prompts import MTBENCH_CATEGORIES, mtbench_questions

    by_category = [[q for q in mtbench_questions() if q.category == c] for c in MTBENCH_CATEGORIES]
    interleaved = [q for group in zip(*by_category) for q in group]
    return Workload(MTBENCH, tuple(Prompt(f"mt-bench-{q.question_id}", q.category,
                                          messages=[{"role": "user", "content": q.text}])
                                   for q in interleaved))


def synthetic(input_tokens: int, output_tokens: int, seed: int = 0) -> Workload:
    """Fixed lengths: a raw prompt (text_input) of ~input_tokens words, exactly output_tokens out
    (min_tokens = max_tokens keeps the end token away until then)."""
    if input_tokens < 1 or output_tokens < 1:
        raise ValueError(f"synthetic lengths must be >= 1, got input {input_tokens}, output {output_tokens}")
    rng = random.Random(seed)
    prompts = tuple(
        Prompt(f"synthetic-{index}", SYNTHETIC,
               text=" ".join(rng.choice(SYNTHETIC_WORDS) for _ in range(input_tokens)),
               max_tokens=output_tokens, min_tokens=output_tokens)
        for index in range(SYNTHETIC_POOL))
    return Workload(f"{SYNTHETIC}-{input_tokens}-{output_tokens}", prompts)


def from_jsonl(path: str | Path) -> Workload:
    """One prompt per line: {"text": ...} (or "prompt"; a raw prompt), or {"messages": [...]} (a chat);
    optional "category" and "max_tokens". A line may also be a bare JSON string."""
    path = Path(path)
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err.msg})") from None
        if isinstance(row, str):
            row = {"text": row}
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object or a string, got {type(row).__name__}")
        text = row.get("text", row.get("prompt"))
        messages = row.get("messages")
        if (text is None) == (messages is None):
            raise ValueError(f"{where}: give exactly one of \"text\" (or \"prompt\") and \"messages\"")
        max_tokens = row.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ValueError(f"{where}: max_tokens must be a positive integer, got {max_tokens!r}")
        prompts.append(Prompt(str(row.get("id", f"{path.stem}-{number}")), str(row.get("category", "user")),
                              text=text, messages=messages, max_tokens=max_tokens))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return Workload(path.stem, tuple(prompts))


def load_workload(spec: str, input_tokens: int = 128, output_tokens: int = 128) -> Workload:
    """`mt-bench`, `synthetic`, or the path of a JSONL file."""
    if spec == MTBENCH:
        return mtbench()
    if spec == SYNTHETIC:
        return synthetic(input_tokens, output_tokens)
    if not Path(spec).is_file():
        raise ValueError(f"workload must be {MTBENCH!r}, {SYNTHETIC!r} or a JSONL file; {spec!r} is none of them")
    return from_jsonl(spec)
