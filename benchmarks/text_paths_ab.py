"""Do text-only runs pay for images? Times the text hot paths of one checkout of rftkit.

    git worktree add /tmp/before <commit before the multimodal change>
    .venv/bin/python benchmarks/text_paths_ab.py /tmp/before    # alternate the two, a few times each
    .venv/bin/python benchmarks/text_paths_ab.py .

Best of 7, one thread: the KV engine sampling 32 addition prompts x 8 (40 new tokens), the
shared-prefix training forward and backward over those rows, and building the default recipe's
pools (20,000 problems; deduplication now goes through `Problem.key`).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))

import torch  # noqa: E402

import rftkit  # noqa: E402
from rftkit.data.pool import TaskSpec, build_pools  # noqa: E402
from rftkit.model.io import build_model  # noqa: E402
from rftkit.model.logprobs import rollout_logprobs  # noqa: E402
from rftkit.model.tokenizer import CharTokenizer  # noqa: E402
from rftkit.rollout.base import SamplingParams  # noqa: E402
from rftkit.rollout.kv_engine import KVCacheEngine  # noqa: E402


def best_of(fn, n: int = 7) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = CharTokenizer()
    model = build_model("micro", 128, tok)
    prompts = [[tok.bos_id] + tok.encode(f"add:{random.Random(i).randint(10, 99)}+{random.Random(-i).randint(10, 99)}=")
               for i in range(32)]
    engine = KVCacheEngine(model, tok)
    params = SamplingParams(n=8, max_new_tokens=40, seed=1)
    gen = engine.generate(prompts, params)

    def train() -> None:
        model.zero_grad()
        logp, _ = rollout_logprobs(model, gen.tokens, gen.mask)
        (logp * gen.mask).sum().backward()

    spec = TaskSpec("arithmetic", "arithmetic", 1.0, (2, 2), (3, 3), {"op": "add", "scratchpad": True})
    times = (best_of(lambda: engine.generate(prompts, params)), best_of(train),
             best_of(lambda: build_pools([spec], 20000, 200, 200, 0)))
    print(f"{Path(rftkit.__file__).parents[1]}: generate {times[0]:.3f} s, train fwd+bwd {times[1]:.3f} s, "
          f"build_pools {times[2]:.3f} s")


if __name__ == "__main__":
    main()
