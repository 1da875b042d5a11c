"""Run the locustfile as Locust processes: one local process, or a master and N workers on
loopback. Locust runs in its own processes (it monkey-patches the standard library with
gevent), headless unless asked for its web UI."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.report import REPORT_JSON

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASSES = {"grpc": "GrpcStreamUser", "http": "HttpStreamUser", "openai": "OpenAIStreamUser"}
WORKER_EXIT_GRACE_S = 30.0


@dataclass
class RunOptions:
    users: int
    duration_s: float
    out: Path
    protocol: str = "grpc"
    workload: str = "mt-bench"
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    openai_port: int = 9000
    max_tokens: int = 128
    input_tokens: int = 128
    output_tokens: int = 128
    request_timeout_s: float = 300.0
    requests: int = 0                    # stop after this many requests (0 = after duration_s)
    spawn_rate: float | None = None      # users started per second; None = all at once
    workers: int = 0                     # 0 = one local process; N = a master and N workers
    web: bool = False                    # Locust's web UI instead of --headless
    csv: str | None = None               # Locust's own --csv prefix
    html: str | None = None              # Locust's own --html report
    locust_args: list[str] = field(default_factory=list)   # passed through verbatim

    def __post_init__(self):
        if self.protocol not in USER_CLASSES:
            raise ValueError(f"protocol must be one of {sorted(USER_CLASSES)}, got {self.protocol!r}")
        if self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        if self.duration_s <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration_s}")
        self.out = Path(self.out)


def _locust() -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]


def master_command(options: RunOptions, master_port: int | None = None) -> list[str]:
    """The local (or master) Locust command line."""
    command = _locust()
    if not options.web:
        command.append("--headless")
    command += [
        "-u", str(options.users), "-r", f"{options.spawn_rate or options.users:g}",
        "-t", f"{max(1, round(options.duration_s))}s",
        "--host", f"http://{options.host}:{options.http_port}", "--grpc-port", str(options.grpc_port),
        "--openai-port", str(options.openai_port),
        "--workload", options.workload, "--max-tokens", str(options.max_tokens),
        "--input-tokens", str(options.input_tokens), "--output-tokens", str(options.output_tokens),
        "--request-timeout", f"{options.request_timeout_s:g}", "--out", str(options.out),
    ]
    if options.requests:
        command += ["--requests", str(options.requests)]
    if options.workers:
        command += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
                    "--expect-workers", str(options.workers)]
    if options.csv:
        command += ["--csv", options.csv]
    if options.html:
        command += ["--html", options.html]
    return command + list(options.locust_args) + [USER_CLASSES[options.protocol]]


def worker_command(master_port: int) -> list[str]:
    # the workers get every other option from the master with their first spawn message
    return _locust() + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]


def _stop(process: subprocess.Popen, timeout_s: float) -> None:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_locust(options: RunOptions) -> int:
    """Run to the end; return Locust's exit code (1 when any request failed)."""
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / REPORT_JSON).unlink(missing_ok=True)
    if not options.workers:
        return subprocess.call(master_command(options))
    from triton_eagle.tritonserver import free_port

    master_port = free_port()
    master = subprocess.Popen(master_command(options, master_port))
    workers = [subprocess.Popen(worker_command(master_port)) for _ in range(options.workers)]
    try:
        code = master.wait()
    finally:
        _stop(master, 0)
        for worker in workers:   # the master tells them to quit; never leave one behind
            _stop(worker, WORKER_EXIT_GRACE_S)
    return code


def read_report(out: str | Path) -> dict:
    path = Path(out) / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no {REPORT_JSON} in {out}: the Locust run did not finish (see its output above)")
    return json.loads(path.read_text())
