"""`triton-eagle train-draft` end to end on a tiny random Llama (the SmolLM2 tokenizer, 4 layers):
both synthesizers write the same data, the head it writes loads in the serving draft model,
and a second run reuses the cached answers and hidden states."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: pip install -e '.[train]'")

from python_backend.reference.eagle3 import Eagle3DraftModel  # noqa: E402
from python_backend.training.synthesize import load_conversations  # noqa: E402
from triton_eagle.cli import main  # noqa: E402

TOKENIZER_DIR = "models/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                         rope_theta=100000.0, max_position_embeddings=2048, rms_norm_eps=1e-5,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        shutil.copy(f"{TOKENIZER_DIR}/{name}", folder / name)
    return folder


def train(tiny_target, work_dir, out, synthesizer: str, capsys) -> str:
    code = main(["train-draft", "--model", str(tiny_target), "--synthesizer", synthesizer, "--num-prompts", "12",
                 "--max-new-tokens", "10", "--epochs", "1", "--layers", "0", "1", "3", "--val-every", "4",
                 "--draft-vocab", "512", "--work-dir", str(work_dir), "--out", str(out)])
    assert code == 0
    return capsys.readouterr().out


def test_both_synthesizers_write_the_same_data_and_a_loadable_head(tiny_target, tmp_path, capsys):
    train(tiny_target, tmp_path / "ref", tmp_path / "head-ref", "reference", capsys)
    printed = train(tiny_target, tmp_path / "hf", tmp_path / "head-hf", "transformers", capsys)
    assert "held-out acceptance length" in printed

    ours = load_conversations(tmp_path / "hf" / "conversations.npz")
    theirs = load_conversations(tmp_path / "ref" / "conversations.npz")
    assert [c.answer_ids for c in ours] == [c.answer_ids for c in theirs]
    assert all(0 < len(c.answer_ids) <= 10 for c in ours)
    features, reference = np.load(tmp_path / "hf" / "features.npy"), np.load(tmp_path / "ref" / "features.npy")
    assert features.shape == reference.shape == (sum(len(c.prompt_ids) + len(c.answer_ids) for c in ours), 3 * 64)
    read = np.ones(len(features), dtype=bool)   # the reference loop leaves each never-read last row zero
    read[np.cumsum([len(c.prompt_ids) + len(c.answer_ids) for c in ours]) - 1] = False
    np.testing.assert_allclose(features[read], reference[read], rtol=1e-4, atol=1e-4)

    draft = Eagle3DraftModel.from_pretrained(tmp_path / "head-hf", np.zeros((49152, 64), np.float32), 4)
    assert draft.config.draft_vocab_size == 512 and draft.config.aux_hidden_state_layer_ids == (0, 1, 3)
    log = json.loads((tmp_path / "head-hf" / "training_log.json").read_text())
    assert log["synthesizer"] == "transformers" and log["prompts"] == 12 and "epoch_1" in log["history"]


def test_a_second_run_reuses_answers_and_hidden_states(tiny_target, tmp_path, capsys):
    train(tiny_target, tmp_path / "wd", tmp_path / "head", "transformers", capsys)
    printed = train(tiny_target, tmp_path / "wd", tmp_path / "head", "transformers", capsys)
    assert "answers and hidden states: reusing" in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unusable_device_is_refused_before_any_work(tmp_path, capsys):
    code = main(["train-draft", "--device", "cuda", "--work-dir", str(tmp_path / "wd"), "--out", str(tmp_path / "head")])
    assert code == 2
    assert "--device cuda is not usable here" in capsys.readouterr().out
    assert not (tmp_path / "wd").exists()


def test_self_instruct_prompts_are_sampled_once_then_reused(tmp_path, capsys):
    # the real target (a random one never ends a user turn): 2 sampled turns, tiny answers
    args = ["train-draft", "--synthesizer", "transformers", "--self-instruct-prompts", "2", "--synthesis-batch", "4",
            "--num-prompts", "2", "--max-new-tokens", "4", "--epochs", "1", "--val-every", "2",
            "--work-dir", str(tmp_path / "wd"), "--out", str(tmp_path / "head")]
    assert main(args) == 0
    first = capsys.readouterr().out
    sampled = [json.loads(line) for line in (tmp_path / "wd" / "self_instruct_prompts.jsonl").read_text().splitlines()]
    assert len(sampled) == 2 and "self-instruct prompts: 2/2" in first
    log = json.loads((tmp_path / "head" / "training_log.json").read_text())
    assert log["prompts"] == 4 and log["self_instruct_prompts"] == 2

    assert main(args) == 0
    second = capsys.readouterr().out
    assert "self-instruct prompts: reusing" in second and "answers and hidden states: reusing" in second
