"""The ensemble's wiring agrees with what each composing model declares in code
(auto-complete), so a renamed or re-typed tensor fails here, not at server start."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ensemble import postprocessing_model, preprocessing_model
from python_backend import request_tensors

CONFIG = Path(__file__).resolve().parents[1] / "model_repository" / "ensemble" / "config.pbtxt"

# model -> (inputs {name: (type, dims)}, outputs {name: (type, dims)})
MODELS = {
    "preprocessing": ({name: (t, d) for name, (t, d, _) in preprocessing_model.INPUTS.items()},
                      preprocessing_model.OUTPUTS),
    "tensorrt_llm": ({name: (t, d) for name, (t, d, _) in request_tensors.INPUTS.items()},
                     request_tensors.OUTPUTS),
    "postprocessing": (postprocessing_model.INPUTS, postprocessing_model.OUTPUTS),
}


def parse_ensemble(text: str):
    def tensors(section: str):
        block = re.search(rf"^{section} \[\n(.*?)\n\]", text, re.MULTILINE | re.DOTALL).group(1)
        return {name: (data_type, [int(d) for d in dims.split(",")]) for name, data_type, dims in re.findall(
            r'name: "(\w+)" data_type: (\w+) dims: \[ ([-\d, ]+) \]', block)}

    steps = []
    for block in re.findall(r"\{\s*(?:#[^\n]*\n\s*)*model_name: \"\w+\".*?\n    \}", text, re.DOTALL):
        model = re.search(r'model_name: "(\w+)"', block).group(1)
        steps.append((model,
                      dict(re.findall(r'input_map \{ key: "(\w+)" value: "(\w+)" \}', block)),
                      dict(re.findall(r'output_map \{ key: "(\w+)" value: "(\w+)" \}', block))))
    return tensors("input"), tensors("output"), steps


ENSEMBLE_INPUTS, ENSEMBLE_OUTPUTS, STEPS = parse_ensemble(CONFIG.read_text())


def test_steps_run_preprocessing_engine_postprocessing():
    assert [model for model, _, _ in STEPS] == ["preprocessing", "tensorrt_llm", "postprocessing"]


@pytest.mark.parametrize("index", range(3))
def test_every_mapped_tensor_is_declared_with_the_same_type_and_dims(index):
    produced = dict(ENSEMBLE_INPUTS)
    for model, _, output_map in STEPS[:index]:
        outputs = MODELS[model][1]
        produced.update({tensor: outputs[key] for key, tensor in output_map.items()})
    model, input_map, output_map = STEPS[index]
    inputs, outputs = MODELS[model]
    for key, tensor in input_map.items():
        assert key in inputs, f"{model} has no input {key}"
        assert tuple(produced[tensor]) == tuple(inputs[key]), f"{model}.{key} <- {tensor}"
    for key in output_map:
        assert key in outputs, f"{model} has no output {key}"


def test_every_ensemble_output_comes_from_postprocessing_with_its_declared_type():
    _, _, output_map = STEPS[2]
    mapped = {tensor: key for key, tensor in output_map.items()}
    assert set(mapped) == set(ENSEMBLE_OUTPUTS)
    for tensor, (data_type, dims) in ENSEMBLE_OUTPUTS.items():
        assert tuple(postprocessing_model.OUTPUTS[mapped[tensor]]) == (data_type, dims), tensor


def test_every_ensemble_input_is_used_and_every_engine_output_is_consumed():
    used = {tensor for _, input_map, _ in STEPS for tensor in input_map.values()}
    assert set(ENSEMBLE_INPUTS) <= used
    _, _, engine_outputs = STEPS[1]
    assert set(engine_outputs) == set(request_tensors.OUTPUTS)
    assert set(engine_outputs.values()) <= set(STEPS[2][1].values())
