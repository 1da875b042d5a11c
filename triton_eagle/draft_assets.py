"""The embedded default's EAGLE-3 head folder.

Until a trained head is committed, `make setup` writes an untrained test head
(random weights in the public heads' layout): it exercises drafting, verification
and rollback for real, but almost none of its guesses are accepted.
"""
from __future__ import annotations

import json
from pathlib import Path

HEAD_SUFFIX = "-Eagle3"
TEST_HEAD_DRAFT_VOCAB = 8192
TEST_HEAD_SEED = 0


def head_dir_for(checkpoint_dir: Path, models_dir: Path) -> Path:
    return Path(models_dir) / f"{Path(checkpoint_dir).name}{HEAD_SUFFIX}"


def ensure_eagle3_head(checkpoint_dir: Path, models_dir: Path) -> Path:
    """Return the head folder, writing the untrained test head if none is there."""
    from python_backend.reference.eagle3 import default_layers_to_capture, make_random_head

    head_dir = head_dir_for(checkpoint_dir, models_dir)
    if (head_dir / "config.json").is_file() and (head_dir / "model.safetensors").is_file():
        return head_dir
    target_config = json.loads((Path(checkpoint_dir) / "config.json").read_text())
    layers = default_layers_to_capture(int(target_config["num_hidden_layers"]))
    make_random_head(head_dir, target_config, layers, TEST_HEAD_DRAFT_VOCAB, TEST_HEAD_SEED)
    return head_dir
