"""Test double of TensorRT-LLM 1.2's LLM API surface (see ../README.md). Not the real package."""
from tensorrt_llm.llmapi.llm import LLM, RequestOutput
from tensorrt_llm.sampling_params import SamplingParams

__version__ = "1.2.0"
IS_TEST_DOUBLE = True

__all__ = ["LLM", "RequestOutput", "SamplingParams", "__version__"]
