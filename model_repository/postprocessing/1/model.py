"""Triton entry point of the `postprocessing` model; the code is ensemble/postprocessing_model.py."""
from ensemble.postprocessing_model import TritonPythonModel  # noqa: F401
