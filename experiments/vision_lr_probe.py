"""Does the built-in VLM read its image? SFT loss of the micro VLM on "what colour is the
square?" at several learning rates and object sizes (behind the visual recipes' learning rates).

    .venv/bin/python experiments/vision_lr_probe.py --lrs 1e-3 3e-4 --sides 6 12 --steps 200

One square of one of 8 colours at a random place in a black 32x32 image (side `--sides` pixels),
trained from scratch with AdamW on clean demonstrations "#red", 64 per step. A model that
ignores the image stays at the answer's marginal (the colour token's loss log 8 = 2.08 nats,
about 0.69 nats per completion token over "#", the colour, eos); one that reads it goes to 0.
Prints that per-token loss every 25 steps.
"""

from __future__ import annotations

import argparse
import math
import random

import torch

from rftkit.model.io import build_model
from rftkit.model.logprobs import token_logprobs
from rftkit.model.tokenizer import CharTokenizer
from rftkit.tasks.vision_draw import COLOURS, place_one, render
from rftkit.train.batches import demo_batch
from rftkit.types import ANSWER_MARKER, Image, Problem

VISION = {"image_size": 32, "patch": 8, "d_vision": 96, "layers": 2, "heads": 4}


def colour_problem(rng: random.Random, side: int) -> Problem:
    colour = rng.choice(COLOURS)
    pixels = render([place_one(rng, 32, "square", colour, side, [])], 32)
    return Problem("probe", "colour=", colour, "exact", demo=ANSWER_MARKER + colour, images=(Image(pixels),))


def probe(lr: float, side: int, steps: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    tok = CharTokenizer()
    model = build_model("micro", 64, tok, VISION)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    curve = []
    for step in range(steps):
        problems = [colour_problem(rng, side) for _ in range(64)]
        batch = demo_batch(tok, [(p, p.demo) for p in problems], 64)
        logp, _ = token_logprobs(model, batch.tokens)
        loss = -(logp * batch.mask).sum() / batch.mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            curve.append(round(loss.item(), 3))
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-4])
    ap.add_argument("--sides", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{len(COLOURS)} colours: a model that ignores the image sits near {math.log(len(COLOURS)):.2f} nats on the "
          f"colour token")
    for side in args.sides:
        for lr in args.lrs:
            print(f"side {side} px, lr {lr:g}: loss per completion token every 25 steps "
                  f"{probe(lr, side, args.steps, args.seed)}", flush=True)


if __name__ == "__main__":
    main()
