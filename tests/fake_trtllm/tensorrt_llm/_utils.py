"""`global_mpi_size` of tensorrt_llm/_utils.py: the MPI world this process belongs to. The real
one asks mpi4py's COMM_WORLD; the double reads the size mpirun exports (OMPI_COMM_WORLD_SIZE)."""
import os


def global_mpi_size() -> int:
    return int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
