"""`TorchSampler` of TensorRT-LLM 1.2 (tensorrt_llm/_torch/pyexecutor/sampler.py): the PyTorch
backend's default sampler. In 1.2 it ignores `bad` / `bad_token_ids`: `_apply_bad_words` arrived
with NVIDIA/TensorRT-LLM PR #16052 ("TorchSampler previously ignored bad_words / bad_token_ids
(only the C++ TRTLLMSampler applied them)"). The double's scripted model ignores them likewise."""


class TorchSampler:
    pass
