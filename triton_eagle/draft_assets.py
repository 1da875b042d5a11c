"""The embedded default's EAGLE-3 head folder.

The trained head is committed under heads/ (made by `triton-eagle train-draft`) and is the
default. For a checkpoint without one, `make setup` writes an untrained test head (random
weights in the public heads' layout) under models/: it exercises drafting, verification
and rollback for real, but almost none of its guesses are accepted.
"""
from __future__ import annotations

import json
from pathlib import Path

HEAD_SUFFIX = "-Eagle3"
TEST_HEAD_DRAFT_VOCAB = 8192
TEST_HEAD_SEED = 0
COMMITTED_HEADS_DIR = Path(__file__).resolve().parent.parent / "heads"


def head_dir_for(checkpoint_dir: Path, models_dir: Path) -> Path:
    return Path(models_dir) / f"{Path(checkpoint_dir).name}{HEAD_SUFFIX}"


def _is_head(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def committed_head_for(checkpoint_dir: Path) -> Path | None:
    """The trained head committed for this checkpoint, if there is one."""
    head_dir = COMMITTED_HEADS_DIR / f"{Path(checkpoint_dir).name}{HEAD_SUFFIX}"
    return head_dir if _is_head(head_dir) else None


def ensure_eagle3_head(checkpoint_dir: Path, models_dir: Path) -> Path:
    """The committed trained head; else the test head under models/, written if not there."""
    from python_backend.reference.eagle3 import default_layers_to_capture, make_random_head

    committed = committed_head_for(checkpoint_dir)
    if committed is not None:
        return committed
    head_dir = head_dir_for(checkpoint_dir, models_dir)
    if _is_head(head_dir):
        return head_dir
    target_config = json.loads((Path(checkpoint_dir) / "config.json").read_text())
    layers = default_layers_to_capture(int(target_config["num_hidden_layers"]))
    make_random_head(head_dir, target_config, layers, TEST_HEAD_DRAFT_VOCAB, TEST_HEAD_SEED)
    return head_dir
