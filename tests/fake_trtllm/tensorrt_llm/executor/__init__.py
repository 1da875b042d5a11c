from tensorrt_llm.executor.result import CompletionOutput  # noqa: F401
