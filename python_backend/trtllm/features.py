"""What the installed TensorRT-LLM does, found on the package itself (fields, classes), never
by its version number: the same adapter then runs 1.2.x and later releases correctly.

Each check reads the objects TensorRT-LLM built from our YAML (`llm.args`), so it judges the
configuration actually in force.
"""
from __future__ import annotations


def sampling_refusal(spec) -> str | None:
    """Why a non-greedy request would be decoded greedily regardless (so we refuse it), or None
    when TensorRT-LLM samples as asked. `spec`: `llm.args.speculative_config` (None: no draft).

    - No draft, or the 2-model path (`eagle3_one_model: false`): the target's sampler samples.
    - One-model Eagle3 samples only with `allow_advanced_sampling` ("For non-greedy sampling on
      1-model", tensorrt_llm/_torch/speculative/interface.py `SpecMetadata`); a release without
      the field decodes greedily; a release where the field is a deprecated no-op detects
      non-greedy requests itself (llm_args.py: "DEPRECATED: no-op ... Non-greedy sampling is now
      auto-detected per request").
    """
    if spec is None or getattr(spec, "eagle3_one_model", True) is False:
        return None
    field = type(spec).model_fields.get("allow_advanced_sampling")
    if field is None:
        return ("the installed TensorRT-LLM decodes one-model Eagle3 greedily (its speculative config has no "
                "allow_advanced_sampling)")
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("status") == "deprecated" or "no-op" in (field.description or ""):
        return None
    if getattr(spec, "allow_advanced_sampling", False):
        return None
    return ("this deployment decodes one-model Eagle3 greedily: set speculative_config.allow_advanced_sampling: "
            "true to sample")


def bad_words_enforced(llm_args) -> bool:
    """Whether the sampler in force applies `bad` / `bad_token_ids`.

    TorchSampler ignored them until NVIDIA/TensorRT-LLM PR #16052 ("Support bad_words in
    TorchSampler", adds `TorchSampler._apply_bad_words`); the C++ TRTLLMSampler always applied them.
    """
    sampler_type = getattr(llm_args, "sampler_type", "auto")
    if str(getattr(sampler_type, "value", sampler_type)).endswith("TRTLLMSampler"):
        return True
    try:
        from tensorrt_llm._torch.pyexecutor.sampler import TorchSampler
    except ImportError:
        return False
    return hasattr(TorchSampler, "_apply_bad_words")


def draft_limit_notes(spec) -> list[str]:
    """Log lines for speculative_config keys TensorRT-LLM ignores in this configuration.

    In 1.2 `max_concurrency` and `draft_len_schedule` act on the 2-model Drafter only
    (tests/unittest/_torch/speculative/test_draft_len_schedule.py: "Stage 1 covers ...
    ModelDrafter (2-model) ... Not covered: ChainDrafter/Eagle3 static loops"); a release whose
    speculative mode reports `support_dynamic_draft_len()` applies the schedule to one-model too.
    """
    if spec is None or getattr(spec, "eagle3_one_model", True) is False:
        return []
    mode = getattr(spec, "spec_dec_mode", None)
    dynamic = getattr(mode, "support_dynamic_draft_len", None)
    one_model_schedule = bool(callable(dynamic) and dynamic())
    notes = []
    for key in ("max_concurrency", "draft_len_schedule"):
        if getattr(spec, key, None) is None or (key == "draft_len_schedule" and one_model_schedule):
            continue
        notes.append(f"speculative_config.{key}: ignored by TensorRT-LLM here: it acts on the 2-model drafter "
                     "only (eagle3_one_model: false), this deployment runs one-model Eagle3; drafting is not "
                     "limited by load")
    return notes
