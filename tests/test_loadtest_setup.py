"""What a load test sends and how it is launched: workloads, the drafting-off twin
repository, and the Locust command lines (no server needed)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from loadtest.baseline import draft_off_repository, engine_config_path
from loadtest.runner import RunOptions, master_command, worker_command
from loadtest.workloads import SYNTHETIC_WORDS, from_jsonl, load_workload, mtbench, synthetic

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_mtbench_workload_keeps_the_80_questions_and_interleaves_categories():
    workload = mtbench()
    assert len(workload.prompts) == 80
    assert Counter(p.category for p in workload.prompts) == {c: 10 for c in (
        "writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")}
    assert len({p.category for p in workload.prompts[:8]}) == 8
    first = workload.prompts[0]
    # a chat: sent through messages, so the model's chat template applies (text_input is a raw prompt)
    assert first.text is None and len(first.messages) == 1 and first.messages[0]["role"] == "user"
    assert first.fields(64) == {"messages": json.dumps(first.messages), "max_tokens": 64, "stream": True}


def test_workload_cycle_starts_at_the_offset_and_wraps():
    workload = mtbench()
    prompts = workload.cycle(offset=79)
    assert [next(prompts).prompt_id for _ in range(2)] == [workload.prompts[79].prompt_id, workload.prompts[0].prompt_id]


def test_synthetic_forces_the_output_length(smollm2_dir):
    from ensemble.tokenizer import load_tokenizer

    workload = synthetic(input_tokens=50, output_tokens=20)
    fields = workload.prompts[0].fields(default_max_tokens=999)
    assert fields["max_tokens"] == fields["min_tokens"] == 20
    assert len({p.text for p in workload.prompts}) == len(workload.prompts)   # no two alike
    # each word is one token for the served tokenizer, so the prompt is exactly 50 tokens
    tokenizer = load_tokenizer(smollm2_dir)
    assert all(len(tokenizer.encode_plain(" " + word)) == 1 for word in SYNTHETIC_WORDS)
    assert len(tokenizer.encode_plain(" " + workload.prompts[0].text)) == 50


def test_jsonl_workload_reads_text_prompt_messages_and_categories(tmp_path):
    path = tmp_path / "mine.jsonl"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    path.write_text("\n".join([
        json.dumps({"text": "one", "category": "support", "max_tokens": 16}),
        json.dumps({"prompt": "two"}),
        "",
        json.dumps({"messages": messages, "id": "chat-1"}),
        json.dumps("a bare string"),
    ]) + "\n")
    workload = load_workload(str(path))
    assert [(p.prompt_id, p.category) for p in workload.prompts] == [
        ("mine-1", "support"), ("mine-2", "user"), ("chat-1", "user"), ("mine-5", "user")]
    assert workload.prompts[0].fields(128)["max_tokens"] == 16
    assert json.loads(workload.prompts[2].fields(128)["messages"]) == messages


@pytest.mark.parametrize("line, message", [
    ("{not json", "mine.jsonl:2: not JSON"),
    (json.dumps({"category": "x"}), 'mine.jsonl:2: give exactly one of "text"'),
    (json.dumps({"text": "a", "messages": []}), 'mine.jsonl:2: give exactly one of "text"'),
    (json.dumps({"text": "a", "max_tokens": 0}), "mine.jsonl:2: max_tokens must be a positive integer, got 0"),
    (json.dumps([1, 2]), "mine.jsonl:2: expected an object or a string, got list"),
])
def test_jsonl_errors_name_the_line_and_the_fix(tmp_path, line, message):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        from_jsonl(path)


def test_unknown_workload_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'mt-bench', 'synthetic' or a JSONL file"):
        load_workload("no-such-file.jsonl")


def test_draft_off_repository_turns_drafting_off_and_keeps_the_models(tmp_path, smollm2_dir, eagle3_head_dir):
    from python_backend.config import load_engine_config

    source = REPO_ROOT / "model_repository"
    before = engine_config_path(source).read_text()
    copy = draft_off_repository(source, tmp_path / "draft-off")
    config = load_engine_config(engine_config_path(copy))
    original = load_engine_config(engine_config_path(source))
    assert config.draft_len == 0 and original.draft_len > 0
    assert config.model == original.model and Path(config.model).is_dir()
    assert config.speculative_config.speculative_model_dir == original.speculative_config.speculative_model_dir
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in source.iterdir() if p.name != "__pycache__")
    assert engine_config_path(source).read_text() == before
    # made again over an existing copy: replaced, not nested
    assert draft_off_repository(source, tmp_path / "draft-off") == copy


def test_locust_command_is_headless_with_the_chosen_user_class_and_pass_through(tmp_path):
    options = RunOptions(users=4, duration_s=30, out=tmp_path, protocol="http", workload="synthetic",
                         http_port=9000, grpc_port=9001, csv=str(tmp_path / "stats"),
                         locust_args=["--loglevel", "DEBUG"])
    command = master_command(options)
    assert command[-1] == "HttpStreamUser"
    assert "--headless" in command
    for flag, value in (("-u", "4"), ("-r", "4"), ("-t", "30s"), ("--host", "http://127.0.0.1:9000"),
                        ("--grpc-port", "9001"), ("--csv", str(tmp_path / "stats")), ("--loglevel", "DEBUG")):
        assert command[command.index(flag) + 1] == value
    distributed = master_command(RunOptions(users=4, duration_s=30, out=tmp_path, workers=2), master_port=5599)
    assert distributed[distributed.index("--expect-workers") + 1] == "2"
    assert distributed[-1] == "GrpcStreamUser"
    assert worker_command(5599)[-4:] == ["--master-host", "127.0.0.1", "--master-port", "5599"]
    assert "--headless" not in master_command(RunOptions(users=1, duration_s=5, out=tmp_path, web=True))


def test_run_options_refuse_bad_values(tmp_path):
    with pytest.raises(ValueError, match="protocol must be one of"):
        RunOptions(users=1, duration_s=5, out=tmp_path, protocol="websocket")
    with pytest.raises(ValueError, match="users must be >= 1, got 0"):
        RunOptions(users=0, duration_s=5, out=tmp_path)
