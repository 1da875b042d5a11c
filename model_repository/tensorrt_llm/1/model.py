"""Triton entry point of the `tensorrt_llm` model; the code is python_backend/triton_model.py."""
from python_backend.triton_model import TritonPythonModel  # noqa: F401
