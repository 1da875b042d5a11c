"""Build the engine an `EngineConfig` names. Imports lazily: the trtllm engine needs the
tensorrt_llm package (GPU only), the reference and simulated engines only numpy."""
from __future__ import annotations

import importlib

from python_backend.config import ConfigError, EngineConfig
from python_backend.protocol import Engine

# engine name -> (module, class with `from_config(config)`)
ENGINES = {
    "reference": ("python_backend.reference.engine", "ReferenceEngine"),
    "trtllm": ("python_backend.trtllm.engine", "TrtllmEngine"),
    # SIMULATED B200 pace from published figures, no model compute (python_backend/simulated/)
    "simulated": ("python_backend.simulated.engine", "SimulatedEngine"),
}


def build_engine(config: EngineConfig) -> Engine:
    try:
        module_name, class_name = ENGINES[config.engine]
    except KeyError:
        raise ConfigError(f"engine: unknown engine {config.engine!r} (one of {', '.join(ENGINES)})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"engine: {config.engine!r} cannot be imported here ({err})") from err
    return getattr(module, class_name).from_config(config)
