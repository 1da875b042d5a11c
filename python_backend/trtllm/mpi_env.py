"""Running inside Triton's Python backend stub, which may have been started under mpirun.

NVIDIA's own LLM-API Triton model clears the MPI job variables it inherits before importing
tensorrt_llm, so TensorRT-LLM initialises MPI afresh and spawns its own tensor-parallel workers
(triton_backend/all_models/llmapi/tensorrt_llm/1/model.py, NVIDIA/TensorRT-LLM commit
044a90d209e380c95e23e8ae42f3583fa05ada78: "Clear inherited MPI job/namespace environment
variables ... Only clear job-specific vars, preserve config vars (OMPI_MCA_*, PMIX_MCA_*)").
We do the same. That model also serves an mpirun world (size > 1) as leader + waiting ranks
through an MpiCommSession; we do not, so a process that still sees such a world refuses to
start, saying so.
"""
from __future__ import annotations

from typing import MutableMapping

from python_backend.config import ConfigError

MPI_JOB_VARIABLES = frozenset({
    "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_NODE_RANK", "OMPI_UNIVERSE_SIZE", "OMPI_FIRST_RANKS", "OMPI_APP_CTX_NUM_PROCS",
    "PMIX_RANK", "PMIX_NAMESPACE", "PMIX_SERVER_URI", "PMIX_SERVER_URI2", "PMIX_SERVER_URI21",
    "PMIX_SERVER_URI3", "PMIX_SERVER_TMPDIR", "PMIX_SYSTEM_TMPDIR", "PMIX_SECURITY_MODE", "PMIX_GDS_MODULE",
    "PMIX_BFROPS_MODULE", "PMIX_PTL_MODULE", "PMIX_VERSION", "PMIX_HOSTNAME",
    "PMI_RANK", "PMI_SIZE", "PMI_FD", "PMI_SPAWNED", "PMI_APPNUM",
})
MPI_JOB_PREFIXES = ("OMPI_MCA_orte_", "ORTE_")


def clear_inherited_mpi_job(environ: MutableMapping[str, str]) -> list[str]:
    """Remove the MPI job variables (not the MCA configuration ones); returns what was removed."""
    removed = sorted(key for key in environ if key in MPI_JOB_VARIABLES or key.startswith(MPI_JOB_PREFIXES))
    for key in removed:
        del environ[key]
    return removed


def refuse_mpi_world() -> None:
    """A ConfigError when this process is one rank of a multi-process MPI world."""
    try:
        from tensorrt_llm._utils import global_mpi_size
    except ImportError:
        return
    size = global_mpi_size()
    if size > 1:
        raise ConfigError(
            f"engine: this process is one of {size} MPI ranks (tritonserver started under mpirun); the trtllm "
            "engine spawns its own tensor_parallel_size workers: start tritonserver without mpirun")
