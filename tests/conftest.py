"""Fixtures shared by the test modules."""
from __future__ import annotations

from pathlib import Path

import pytest

from triton_server import triton_server  # noqa: F401  (session fixture: a real tritonserver)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The SmolLM2-135M-Instruct HF checkpoint folder, converted from the packaged GGUF once (kept in models/)."""
    from triton_eagle.assets import CHECKPOINT_NAME, convert_gguf, packaged_gguf_path

    checkpoint_dir = REPO_ROOT / "models" / CHECKPOINT_NAME
    convert_gguf(packaged_gguf_path(), checkpoint_dir)
    return checkpoint_dir


@pytest.fixture(scope="session")
def eagle3_head_dir(smollm2_dir) -> Path:
    """The embedded default's EAGLE-3 head folder (made by `triton-eagle assets`)."""
    from triton_eagle.draft_assets import ensure_eagle3_head

    return ensure_eagle3_head(smollm2_dir, REPO_ROOT / "models")
