"""Run the OpenAI server as its own process beside a tritonserver: start, wait until its
/health says the ensemble is ready, stop (SIGTERM, then kill)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

from triton_eagle.openai_api.command import API_KEY_ENV
from triton_eagle.tritonserver import DEFAULT_LOG_DIR, LOCAL_OPENER


class OpenAIServerError(RuntimeError):
    """The OpenAI server did not come up; the message carries its log tail."""


class OpenAIServer:
    def __init__(self, triton_url: str, port: int, host: str = "127.0.0.1", metrics_url: str | None = None,
                 api_key: str | None = None, served_model_name: str = "ensemble", log_path: Path | None = None):
        self.triton_url, self.host, self.port = triton_url, host, port
        self.metrics_url, self.api_key, self.served_model_name = metrics_url, api_key, served_model_name
        self.log_path = Path(log_path or DEFAULT_LOG_DIR / f"openai-{port}.log")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an `openai` client takes as base_url."""
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "triton_eagle.cli", "openai", "--triton-url", self.triton_url,
                   "--host", self.host, "--port", str(self.port), "--served-model-name", self.served_model_name]
        if self.metrics_url:
            command += ["--metrics-url", self.metrics_url]
        return command

    def health_status(self) -> int | None:
        """/health's HTTP status (200: the ensemble is ready, 503: not), None while nothing answers."""
        try:
            with LOCAL_OPENER.open(f"{self.url}/health", timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, OSError):
            return None

    def start(self, ready_timeout_s: float = 60.0, wait_for_ensemble: bool = True) -> "OpenAIServer":
        """Start; return once /health is 200 (or, without `wait_for_ensemble`, once it answers)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        if self.api_key:   # by environment, so the key is not on the process list
            env[API_KEY_ENV] = self.api_key
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + ready_timeout_s
        while (status := self.health_status()) != 200 and (wait_for_ensemble or status is None):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise OpenAIServerError(f"the OpenAI server on port {self.port} did not become healthy "
                                        f"(log {self.log_path}):\n{tail}")
            time.sleep(0.2)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "OpenAIServer":
        return self if self.running() else self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()
