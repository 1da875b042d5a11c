"""Triton entry point of the `preprocessing` model; the code is ensemble/preprocessing_model.py."""
from ensemble.preprocessing_model import TritonPythonModel  # noqa: F401
