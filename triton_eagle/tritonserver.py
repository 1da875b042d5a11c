"""Start and stop the real `tritonserver` that ships in the nvidia-pytriton wheel.

The wheel carries the server binary, the Python backend and one backend stub per
Python minor version. This module turns that into a working server on the CPU:

- a backend directory of *symlinks* (copies break the libraries' relative search
  paths) whose stub matches the running interpreter's major.minor;
- PATH with the venv's bin first: the stub's embedded interpreter finds `python3`
  there, so `sys.prefix` is the venv and model.py imports the venv's packages;
- LD_LIBRARY_PATH with the base interpreter's LIBDIR, so the stub loads the same
  libpython as the venv's stdlib and not another build of the same minor;
- a drain before the stop: the engine model is told (a file it watches, named in its
  environment) to admit nothing new (busy) and to end what still runs at the drain timeout
  with a final response that says why; SIGTERM comes once it has nothing running. Not the
  other way round: an exiting tritonserver stops the scheduler of every model with nothing
  in flight at that instant, so an ensemble stream's next postprocessing call would be refused.
  Health checks see the drain at once: tritonserver 2.51 has no call that marks a serving
  server not ready, but with strict readiness a model that failed to load does, so the drain
  starts by asking (explicit model control) to load a model with no backend;
- a bounded stop: with a client's gRPC stream still open tritonserver never exits (its
  gRPC Server::Shutdown waits for the client), so once its log says its own stop is over,
  or after the drain and exit timeouts at the latest, the whole process group is killed, and
  the shared-memory regions an unclean exit leaves behind are removed.

    with TritonServer("model_repository", http_port=8000) as server:
        print(server.http_url)
"""
from __future__ import annotations

import base64
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from python_backend.watchdog import DRAIN_FILE_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BACKEND_DIR = REPO_ROOT / "build" / "triton-backends"
DEFAULT_LOG_DIR = REPO_ROOT / "build" / "triton-logs"
SHM_GLOB = "/dev/shm/triton_python_backend_shm_region_*"
# on a CPU-only machine these error lines are expected and say nothing about the models
HARMLESS_LOG_LINES = ("CudaDriverHelper", "NVML", "DCGM", "unable to create stream", "pinned memory")
STOP_GRACE_S = 10.0   # beyond --exit-timeout-secs: model finalize and stub teardown
NOT_READY_MARKER = "draining-for-shutdown"   # the model whose failed load marks the server not ready
# tritonserver's own stop ends with one of these (server.cc, main.cc of 2.51)
SHUTDOWN_DONE_LINE = re.compile(r"Found 0 live models and 0 in-flight non-inference requests|Exit timeout expired")
SHUTDOWN_DONE_GRACE_S = 2.0   # after that line: the frontends close, the process exits
DRAIN_SETTLE_S = 2.0  # beyond the drain timeout: the model's last final responses go out
ACTIVE_REQUESTS_METRIC = re.compile(r"^triton_eagle_active_requests\{[^}]*\} (\S+)$", re.MULTILINE)


# loopback only: an http_proxy in the environment must not see our health checks
LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class TritonServerError(RuntimeError):
    """The server could not start or stop; the message carries the log tail."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel keeps the server, the Python backend and the stubs."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    def stub(self, python_version: str) -> Path:
        return self.root / "python_backend_stubs" / python_version / "triton_python_backend_stub"

    @property
    def libs_dir(self) -> Path:
        # the wheel's vendored shared libraries (libcudart for the stub), beside pytriton/
        return self.root.parents[1] / "nvidia_pytriton.libs"


def find_triton() -> TritonInstall:
    """The tritonserver install inside the nvidia-pytriton wheel of this interpreter."""
    try:
        import pytriton  # noqa: PLC0415 - only needed to locate the wheel
    except ImportError:
        raise TritonServerError(
            "nvidia-pytriton is not installed in this interpreter "
            f"({sys.executable}); run `make setup` or `pip install nvidia-pytriton==0.7.0`") from None
    install = TritonInstall(Path(pytriton.__file__).resolve().parent / "tritonserver")
    if not install.binary.is_file():
        raise TritonServerError(f"no tritonserver binary at {install.binary}")
    return install


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def prepare_backend_dir(install: TritonInstall | None = None,
                        backend_dir: Path = DEFAULT_BACKEND_DIR) -> Path:
    """A backend directory of symlinks: the wheel's Python backend + this Python's stub."""
    install = install or find_triton()
    stub = install.stub(python_version())
    if not stub.is_file():
        raise TritonServerError(
            f"the wheel has no Python backend stub for Python {python_version()} ({stub})")
    python_dir = Path(backend_dir) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    links = {
        "libtriton_python.so": install.python_backend / "libtriton_python.so",
        "triton_python_backend_utils.py": install.python_backend / "triton_python_backend_utils.py",
        "triton_python_backend_stub": stub,
    }
    for name, target in links.items():
        link = python_dir / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        # replace atomically: another process (a parallel test run) may read it now
        tmp = python_dir / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)
    return Path(backend_dir)


def venv_bin_dir() -> Path:
    """The bin folder whose `python3` the stub must find (the venv's, when in one)."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "bin"
    return Path(sys.executable).parent


def server_environment(install: TritonInstall | None = None,
                       base_env: dict[str, str] | None = None) -> dict[str, str]:
    install = install or find_triton()
    env = dict(os.environ if base_env is None else base_env)
    env["PATH"] = os.pathsep.join([str(venv_bin_dir()), env.get("PATH", "/usr/bin:/bin")])
    library_dirs = []
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        library_dirs.append(libdir)
    if install.libs_dir.is_dir():
        library_dirs.append(str(install.libs_dir))
    if env.get("LD_LIBRARY_PATH"):
        library_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_dirs)
    # PYTHONPATH is ignored by the isolated stub interpreter; unset so nothing pretends otherwise
    env.pop("PYTHONPATH", None)
    return env


def free_ports(count: int = 3, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free right now (held open together, so no duplicates)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def shm_regions() -> set[str]:
    return set(glob.glob(SHM_GLOB))


def _mapped_shm_regions(pids: Sequence[int]) -> set[str]:
    """Python-backend shm files mapped by these processes (read from /proc/PID/maps)."""
    prefix = SHM_GLOB[:-1]
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    path = line.rstrip("\n").split(maxsplit=5)[-1]
                    if path.startswith(prefix):
                        found.add(path.removesuffix(" (deleted)"))
        except OSError:
            continue
    return found


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for pid in _all_pids():
        try:
            if os.getpgid(pid) == pgid:
                pids.append(pid)
        except OSError:
            continue
    return pids


class TritonServer:
    """One tritonserver process bound to 127.0.0.1, started and stopped within bounds."""

    def __init__(
        self,
        model_repository: str | Path,
        *,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        host: str = "127.0.0.1",
        exit_timeout_s: int = 5,
        drain_timeout_s: float = 0.0,
        log_path: str | Path | None = None,
        log_verbose: int = 0,
        models: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        backend_dir: Path = DEFAULT_BACKEND_DIR,
    ):
        """`models=None` serves the whole repository; a list loads only those (an ensemble
        brings its composing models). Explicit model control either way, for the drain.
        On stop, running requests get `drain_timeout_s` to finish, then `exit_timeout_s` more."""
        self.model_repository = Path(model_repository).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.host = host
        self.exit_timeout_s = exit_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.log_path = Path(log_path) if log_path else DEFAULT_LOG_DIR / f"tritonserver-{http_port}.log"
        self.drain_file = self.log_path.with_name(self.log_path.name + ".drain")
        self.log_verbose = log_verbose
        self.models = list(models) if models is not None else None
        self.extra_args = list(extra_args)
        self.backend_dir = backend_dir
        self.process: subprocess.Popen | None = None
        self._shm_before: set[str] = set()
        self.owned_shm_regions: set[str] = set()   # python-backend shm files our processes mapped
        self._log_file = None

    # -- addresses -------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, install: TritonInstall, backend_dir: Path) -> list[str]:
        if not self.model_repository.is_dir():
            raise TritonServerError(f"model repository not found: {self.model_repository}")
        cmd = [
            str(install.binary),
            "--model-repository", str(self.model_repository),
            "--backend-directory", str(backend_dir),
            "--http-address", self.host, "--http-port", str(self.http_port),
            "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
            "--metrics-address", self.host, "--metrics-port", str(self.metrics_port),
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
        ]
        models = ["*"] if self.models is None else self.models
        cmd += ["--model-control-mode=explicit"] + [f"--load-model={name}" for name in models]
        return cmd + self.extra_args

    # -- life cycle ------------------------------------------------------------------
    def start(self, ready_timeout_s: float = 120.0) -> "TritonServer":
        if self.process is not None:
            raise TritonServerError("server already started")
        install = find_triton()
        backend_dir = prepare_backend_dir(install, self.backend_dir)
        cmd = self.command(install, backend_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        self._shm_before = shm_regions()
        self.drain_file.unlink(missing_ok=True)
        env = server_environment(install)
        env[DRAIN_FILE_ENV] = str(self.drain_file)
        # own session: the stop can kill the server and its stubs as one process group
        self.process = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=self.model_repository)
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.owned_shm_regions |= _mapped_shm_regions(self._pids())
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll HTTP /v2/health/ready until 200, the process dies, or the timeout."""
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while True:
            code = self.process.poll()
            if code is not None:
                raise TritonServerError(
                    f"tritonserver exited with code {code} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}")
            if self.is_ready(url):
                return
            if time.monotonic() > deadline:
                raise TritonServerError(
                    f"tritonserver not ready after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.1)

    def is_ready(self, url: str | None = None) -> bool:
        try:
            with LOCAL_OPENER.open(url or f"http://{self.http_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """Drain, SIGTERM, wait drain + exit timeout + grace, then SIGKILL the process group;
        remove the shm regions this server left. Returns the exit code (negative = killed by signal)."""
        if self.process is None:
            return None
        process = self.process
        pgid = process.pid   # start_new_session: the server leads its own group
        if process.poll() is None:
            self.owned_shm_regions |= _mapped_shm_regions(self._pids())
            self._drain()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            process.send_signal(signal.SIGTERM)
            if not self._wait_exit(self.exit_timeout_s + STOP_GRACE_S, log_offset):
                self._kill_group(pgid)
                process.wait(timeout=10)
        # stubs outlive a killed server for a few seconds; never leave them behind
        if _group_pids(pgid):
            self._kill_group(pgid)
            deadline = time.monotonic() + 5
            while _group_pids(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._remove_shm_left()
        self.drain_file.unlink(missing_ok=True)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.process = None
        return process.returncode

    def _wait_exit(self, timeout_s: float, log_offset: int) -> bool:
        """Wait for the process to exit after SIGTERM. Once its log says the shutdown is over
        (models unloaded, or its exit timeout spent) it gets only SHUTDOWN_DONE_GRACE_S more:
        what remains is gRPC's Server::Shutdown, which waits for as long as any client holds a
        stream open."""
        deadline = time.monotonic() + timeout_s
        done_at = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return True
            if done_at is None and self._log_says_shutdown_done(log_offset):
                done_at = time.monotonic()
                deadline = min(deadline, done_at + SHUTDOWN_DONE_GRACE_S)
            time.sleep(0.05)
        return self.process.poll() is not None

    def _log_says_shutdown_done(self, offset: int) -> bool:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return False
        return bool(SHUTDOWN_DONE_LINE.search(text))

    def _drain(self) -> None:
        """Tell the engine model to drain (python_backend/watchdog.py reads the file), then wait
        until it runs nothing: by the drain timeout it ends what is left, DRAIN_SETTLE_S lets
        those final responses out."""
        self._mark_not_ready()
        tmp = self.drain_file.with_name(self.drain_file.name + ".tmp")
        tmp.write_text(f"{self.drain_timeout_s:g}\n")
        tmp.replace(self.drain_file)
        deadline = time.monotonic() + self.drain_timeout_s + DRAIN_SETTLE_S
        while self.running() and self.active_requests() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _mark_not_ready(self) -> None:
        """/v2/health/ready false from now on: load a model that cannot load (no such backend)."""
        config = json.dumps({"name": NOT_READY_MARKER, "backend": NOT_READY_MARKER})
        body = json.dumps({"parameters": {"config": config,
                                          "file:1/why": base64.b64encode(b"draining for shutdown").decode()}})
        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/models/{NOT_READY_MARKER}/load",
                                         data=body.encode(), method="POST")
        try:
            LOCAL_OPENER.open(request, timeout=5).close()
        except (urllib.error.URLError, OSError):
            pass   # the refusal is the point (HTTP 400: no backend "draining-for-shutdown")

    def active_requests(self) -> int:
        """Requests the engine model runs now (its metric; 0 when it has none or is not there)."""
        try:
            with LOCAL_OPENER.open(self.metrics_url, timeout=2) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return 0
        return int(sum(float(value) for value in ACTIVE_REQUESTS_METRIC.findall(text)))

    def _pids(self) -> list[int]:
        return _group_pids(self.process.pid) if self.process is not None else []

    @staticmethod
    def _kill_group(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _remove_shm_left(self) -> None:
        """Remove regions new since our start that we mapped, or that nobody maps any more
        (a server starting beside ours has its regions mapped, so they are kept)."""
        new = shm_regions() - self._shm_before
        if not new:
            return
        in_use = _mapped_shm_regions(_all_pids())
        for path in new:
            if path in self.owned_shm_regions or path not in in_use:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def log_tail(self, lines: int = 15) -> str:
        """The log's error lines (model load failures hide above a long options table) and its end."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        all_lines = text.splitlines()
        errors = [line for line in all_lines
                  if (line.startswith("E") and line[1:5].isdigit() or "UNAVAILABLE" in line)
                  and not any(noise in line for noise in HARMLESS_LOG_LINES)]
        tail = [line for line in all_lines[-lines:] if line not in errors]
        return "\n".join(errors[-20:] + (["..."] if errors else []) + tail)

    def __enter__(self) -> "TritonServer":
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
