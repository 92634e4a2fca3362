"""rftkit's SFT update against a bare PyTorch loop of the model's own loss, same batch (docs/benchmarks.md).

    .venv/bin/python benchmarks/sft_floor.py WARM_START_DIR

Both run forward + backward + AdamW of the same HF model on the same 64 "a+b=" examples
(rftkit: `token_distributions` + masked NLL, as the `sft` objective; bare: `model(input_ids,
labels=...).loss`). Prints the mean step time of 10 steps after one warm-up, twice each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main(path: str) -> None:
    from rftkit.model.hf import load_hf_policy
    from rftkit.model.logprobs import token_distributions

    torch.set_num_threads(1)
    pol = load_hf_policy(path, dtype="float32", device="cpu")
    pol.train()
    ids, att, lab = common.sft_batch(common.build_tokenizer(), common.problems(64, 5))
    mask = (lab != -100).float()
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-5)

    def rftkit_step():
        lp = token_distributions(pol, ids)[0]
        loss = -(lp * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def bare_step():
        loss = pol.model(input_ids=ids, attention_mask=att, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    for fn in (rftkit_step, bare_step, rftkit_step, bare_step):
        fn()
        t = time.perf_counter()
        for _ in range(10):
            fn()
        print(f"{fn.__name__}: {(time.perf_counter() - t) / 10:.4f} s/step  (batch {tuple(ids.shape)})")


if __name__ == "__main__":
    main(sys.argv[1])
