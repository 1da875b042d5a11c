"""Simulation profiles: what a seed deployment would do on 8xB200, from published figures only.

A profile (profiles/*.yaml, each figure cited beside it) gives the MT-Bench acceptance length per
category (the draft head's model card) and the engine iteration time as a function of the requests
in the iteration, `base_ms + per_request_ms * n`, with drafting on and off. Everything derived from
a profile is a simulation and is labelled so wherever it is printed.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from triton_eagle.prompts import MTBENCH_CATEGORIES

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
SIMULATION_LABEL = "simulated from published figures"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepTime(_Strict):
    base_ms: float
    per_request_ms: float

    def seconds(self, requests: int) -> float:
        return (self.base_ms + self.per_request_ms * requests) / 1000.0


class StepTimes(_Strict):
    drafting_off: StepTime
    drafting_on: StepTime


class SimulationProfile(_Strict):
    name: str
    preset: str
    label: str
    acceptance_length: dict[str, float]
    step_time: StepTimes

    @field_validator("acceptance_length")
    @classmethod
    def _every_category(cls, value: dict[str, float]) -> dict[str, float]:
        missing = [c for c in MTBENCH_CATEGORIES if c not in value]
        if missing:
            raise ValueError(f"missing MT-Bench categories: {', '.join(missing)}")
        bad = {c: v for c, v in value.items() if not 1.0 <= v <= 4.0}
        if bad:
            raise ValueError(f"acceptance lengths must be 1..4 (draft length 3), got {bad}")
        return value

    @property
    def mean_acceptance_length(self) -> float:
        return sum(self.acceptance_length[c] for c in MTBENCH_CATEGORIES) / len(MTBENCH_CATEGORIES)

    def step_seconds(self, requests: int, drafting: bool) -> float:
        times = self.step_time.drafting_on if drafting else self.step_time.drafting_off
        return times.seconds(requests)

    def tokens_per_s_per_user(self, running: int, max_tokens: int, drafting: bool) -> float:
        """The rate one request streams at with `running` requests in the engine: one token on
        its first iteration, then the cards' mean (MT-Bench) per iteration."""
        tokens_per_step = self.mean_acceptance_length if drafting else 1.0
        iterations = 1 + (max_tokens - 1) / tokens_per_step
        return max_tokens / (iterations * self.step_seconds(running, drafting))

    def demanded_tokens_per_s(self, concurrency: int, max_batch_size: int, max_tokens: int,
                              drafting: bool) -> float:
        """What the simulated engine produces in total with `concurrency` closed-loop clients
        (at most `max_batch_size` of them in the engine at once)."""
        running = min(concurrency, max_batch_size)
        return running * self.tokens_per_s_per_user(running, max_tokens, drafting)


def profile_names() -> list[str]:
    return sorted(path.stem for path in PROFILE_DIR.glob("*.yaml"))


def profile_path(name_or_path: str | Path) -> Path:
    """A packaged profile's name, or a path to a profile file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"profile: unknown simulation profile {name_or_path!r} (one of {', '.join(profile_names())})")
    return path


def load_profile(name_or_path: str | Path) -> SimulationProfile:
    path = profile_path(name_or_path)
    try:
        return SimulationProfile(**yaml.safe_load(path.read_text()))
    except FileNotFoundError:
        raise ValueError(f"profile: no simulation profile at {path}") from None
    except ValidationError as err:
        raise ValueError(f"profile {path}: {err}") from None
