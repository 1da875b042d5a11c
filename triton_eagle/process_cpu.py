"""CPU seconds of tritonserver and each Python model's stub process, read from /proc (Linux).

Each Python-backend model instance is its own `triton_python_backend_stub` process, so its CPU time
is that model's Python work; tritonserver's own process is Triton (gRPC/HTTP frontends, the
ensemble scheduler, the backends' C++ side). The simulated engine's thread (named by
python_backend/simulated/engine.py) is counted apart: it stands in for the GPU engine, whose work
is not the serving layer's.
"""
from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


SIMULATED_ENGINE_THREAD = "sim-engine"   # python_backend/simulated/engine.py ENGINE_THREAD_NAME


def cpu_seconds(pid: int, task: str = "") -> float:
    """User + system CPU seconds of a process (all its threads), or of one thread (`task`: its
    id); 0 once it is gone."""
    path = Path(f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat")
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS   # utime, stime (stat fields 14, 15)


def thread_cpu_seconds(pid: int, name: str) -> float:
    """CPU seconds of a process's threads called `name` (their OS-level name)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if (task / "comm").read_text().strip() == name:
                total += cpu_seconds(pid, task.name)
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def server_processes(server_pid: int) -> dict[str, list[int]]:
    """{"tritonserver": [pid], model name: [stub pids]} for a running server."""
    processes: dict[str, list[int]] = {"tritonserver": [server_pid]}
    pending = _children(server_pid)
    while pending:
        pid = pending.pop()
        pending += _children(pid)
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or b"triton_python_backend_stub" not in argv[0]:
            continue
        model_file = next((a.decode() for a in argv[1:] if a.endswith(b"model.py")), "")
        name = Path(model_file).parent.parent.name if model_file else f"stub-{pid}"
        processes.setdefault(name, []).append(pid)
    return processes


def snapshot(processes: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far per process group name, the simulated engine's thread apart
    ("simulated_engine"), plus this process as "client"."""
    seconds = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in processes.items()}
    simulated = {name: sum(thread_cpu_seconds(pid, SIMULATED_ENGINE_THREAD) for pid in pids)
                 for name, pids in processes.items()}
    for name, engine_seconds in simulated.items():
        seconds[name] -= engine_seconds
    seconds["simulated_engine"] = sum(simulated.values())
    seconds["client"] = cpu_seconds(os.getpid())
    return seconds
