"""One request as the load generator measured it, and the JSONL files that keep them raw.

Locust's own statistics round response times into buckets; these samples keep every
arrival time, so any figure in the report can be recomputed from the file.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator

# outcome of a request
OK = "ok"
FAILED = "failed"
CUT_AT_END = "cut_at_end"     # still streaming when the run stopped: not a failure

# failure reasons
SERVER_DOWN = "server down"            # nothing answered (connection refused, gRPC UNAVAILABLE)
SERVER_ERROR = "server error"          # refused before streaming (bad input, model not ready)
ERROR_MID_STREAM = "error mid-stream"  # an error, or the stream ended, after tokens had arrived
TIMEOUT = "timeout"                    # no final response within the request timeout
FAILURE_REASONS = (SERVER_DOWN, SERVER_ERROR, ERROR_MID_STREAM, TIMEOUT)


@dataclass
class RequestSample:
    """Raw measurements of one streamed request (times from the client's clock)."""

    protocol: str                       # "grpc" | "http"
    category: str                       # MT-Bench category, "synthetic", or the JSONL's
    prompt_id: str
    start_time: float                   # epoch seconds when the request was sent
    chunk_s: list[float] = field(default_factory=list)    # each response's arrival, s after start
    chunk_tokens: list[int] = field(default_factory=list)  # output tokens each response carried
    chunk_chars: list[int] = field(default_factory=list)   # characters of text each carried
    end_s: float | None = None          # final response (or failure) s after start
    outcome: str = OK
    failure_reason: str | None = None
    error: str | None = None
    finish_reason: str = ""
    input_tokens: int | None = None     # the final response's num_input_tokens
    output_tokens: int | None = None    # the final response's num_output_tokens
    total_draft_tokens: int | None = None
    total_accepted_draft_tokens: int | None = None
    acceptance_length: float | None = None
    process: str = ""                   # host:pid of the Locust process that sent it

    def add_chunk(self, at_s: float, tokens: int, chars: int) -> None:
        self.chunk_s.append(at_s)
        self.chunk_tokens.append(tokens)
        self.chunk_chars.append(chars)

    def fail(self, reason: str, error: str, at_s: float) -> None:
        self.outcome, self.failure_reason, self.error, self.end_s = FAILED, reason, error, at_s

    @property
    def received_tokens(self) -> int:
        return sum(self.chunk_tokens)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> "RequestSample":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in row.items() if key in known})


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class SampleLog:
    """Appends samples to a JSONL file as they complete (a crash keeps what was written)."""

    def __init__(self, path: str | Path, extra=None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")
        self._extra = extra   # sample -> dict of derived fields written beside the raw ones

    def write(self, sample: RequestSample) -> None:
        row = sample.to_dict()
        if self._extra is not None:
            row.update(self._extra(sample))
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_samples(path: str | Path) -> list[RequestSample]:
    return list(iter_samples(Path(path).read_text(encoding="utf-8").splitlines()))


def iter_samples(lines: Iterable[str]) -> Iterator[RequestSample]:
    for line in lines:
        if line.strip():
            yield RequestSample.from_dict(json.loads(line))
