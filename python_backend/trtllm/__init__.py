"""The `trtllm` engine: TensorRT-LLM 1.2's LLM API (PyTorch backend) behind the engine
protocol of python_backend/protocol.py. `tensorrt_llm` is imported only when a config
selects this engine (GPU machines, the NGC Triton TRT-LLM container)."""
