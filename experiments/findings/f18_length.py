"""F18: after long SFT, RL's main effect is shorter solutions; length-regularized RL cuts
tokens 30-50 % at about the same accuracy (Yoshihara et al. 2025; TLDR, Zhang et al. 2025)."""

from __future__ import annotations

import json
import statistics
import time

from experiments.findings.common import (
    PARTS,
    Ctx,
    Result,
    default_start,
    eval_json,
    fmt,
    init_from,
    mean,
    plot_path,
    pyplot,
    run_all,
    series,
    stage,
    start,
    train_tree,
    tree_of,
)

ID = "F18"
TITLE = "After SFT on verbose traces, does RL shorten the solutions, and by how much with a length penalty?"
SHORT = "Length-penalized RL after long SFT cuts tokens 30-50% at equal accuracy (TLDR)"
PAPER = ("Yoshihara, Yamaguchi, Inoue 2025, \"A Practical Two-Stage Recipe for Mathematical LLMs: Maximizing "
         "Accuracy with SFT and Efficiency with Reinforcement Learning\", arXiv:2507.08267; Zhang, Huang, Ni, Xiong, "
         "Chen, Oymak 2025, \"Making Small Language Models Efficient Reasoners: Intervention, Supervision, "
         "Reinforcement\" (TLDR), arXiv:2505.07961")
CLAIM = ("After a long SFT phase, GRPO's main effect is to shorten solutions while keeping accuracy; "
         "length-regularized GRPO cuts tokens by about 30-50 % with at most 1-2 points of accuracy change.")
MAX_NEW = 64
OVERLONG = {"max_len": MAX_NEW, "cache_len": 40}  # penalty (24 - L) / 40 past 24 tokens: linear in length
ARMS = ["correct", "length"]
STEPS, PROMPTS, SFT_STEPS = 30, 16, 200
SETUP = f"""
- **Task**: 2-digit addition with the scratchpad, exact-match verifier; 100 held-out problems.
- **Start** (shared, seed 0): the default start's base (`models/base`, noisy demos) fine-tuned {SFT_STEPS} steps
  × 32 (lr 1e-3, cosine) on `verbose` demos (`experiments/findings/parts.py`): every scratchpad step written twice
  (`8+7=15;8+7=15;5+6+1=12;5+6+1=12;#125`), redundant but correct, about twice the tokens of the base's traces.
- **Arms** (GRPO, ppo_clip, token-mean, {STEPS} steps × {PROMPTS} prompts × group 8, lr 2e-4 as the default
  recipe (5e-4 collapsed: pass@1 43 -> 0 % within 2 steps), from the SFT model, `max_new_tokens` {MAX_NEW}):
  `correct`: the exact-match reward only; `length`: the same plus a linear length penalty, the `overlong` reward
  term (docs/rewards.md) with max_len {OVERLONG['max_len']}, cache_len {OVERLONG['cache_len']}: 0 up to 24 tokens (a
  concise correct trace is about 20), then -(L - 24)/40 (-1 past {MAX_NEW}), a TLDR-style budget penalty
  `correct - λ·max(0, L - L0)` with λ = 1/40 per token. A first try with the budget at 16 tokens (below any
  correct solution) collapsed (seed 0: pass@1 1 %, 9 tokens per sample: the penalty on the many wrong samples
  pushed them shorter than a solution can be); that budget was a design error and was replaced.
- **Measured**: held-out pass@1 (16 samples, temperature 1) and tokens per correct answer (mean completion length,
  eos included, of the correct samples) at the end; the length and accuracy of the training rollouts (128 per
  step) at every step. Seeds vary the RL runs (the start is shared).
- **Differs from the papers**: a 1.8M-parameter char model; "verbose" is plain restatement, not the hesitant,
  self-checking long CoT of distilled reasoning models; "long SFT" is {SFT_STEPS} steps (40 were far too few:
  pass@1 1 %), not 10 epochs, and the tiny model still miscopies some restated steps, so its accuracy is not at
  a plateau and RL can raise it too; one length level, not TLDR's several.
"""
READING = """
- GRPO with the correctness reward alone changes almost nothing in 30 steps: pass@1 43.3 % -> 42.9 ± 2.3 %,
  tokens per correct answer 30.5 -> 30.1 ± 0.3 (a 1 % cut). The "RL mainly shortens" effect of the two-stage
  recipe does not appear: nothing in the exact-match reward prefers the shorter of two correct traces.
- The length penalty does shorten (tokens per sample 32.6 -> 17.4 ± 5.1) but by dropping *needed* steps, not the
  restated ones: samples such as `0+1=1;0+1=1;#10` keep the duplicated first column and lose the second.
  pass@1 falls to 9.6 ± 13.7 % (two seeds to 3 % and 0.5 %, one to 25 %); the 25 % cut in tokens per correct
  answer is over the few answers still right. The rule's accuracy condition fails by 34 points.
- With the budget below any correct trace (16 tokens, first try) seed 0 collapsed the same way (pass@1 1 %).
  The tiny model has learned the verbose trace as one pattern; with 40-45 % of the rollouts wrong, the penalty on
  the many wrong samples pushes the whole distribution shorter before the correct ones can teach which steps are
  redundant. TLDR starts from SFT models that are mostly right and applies the penalty at several budget levels.
- The verbose SFT start is itself weak (pass@1 43 %: the model miscopies restated steps), unlike the papers'
  accuracy-saturated long-SFT models; a start closer to saturation would be a fairer test.
"""
BUDGET = "≈ 32 min wall for 3 seeds on the shared 2-core machine, other findings running (SFT start ≈ 12 min)"


def sft_tree(ctx: Ctx) -> dict:
    tree = init_from(tree_of("default"), default_start(ctx) / "models" / "base")
    tree["imports"] = [str(PARTS)]
    tree["data"].update(test_size=100, ood_size=10)
    tree["rollout"]["max_new_tokens"] = MAX_NEW
    tree["eval"] = {"n_samples": 16, "ks": [1, 16], "splits": ["test"]}
    sft = stage(tree, "sft")
    sft.update(steps=SFT_STEPS, lr=0.001, warmup_steps=10, lr_schedule="cosine",
               demos={"name": "verbose", "params": {"repeat": 2}})
    tree["stages"] = [sft]
    return tree


def rl_tree(ctx: Ctx, model, arm: str) -> dict:
    tree = init_from(sft_tree(ctx), model)
    rl = stage(tree_of("default"), "rl")
    rl.update(steps=ctx.steps(STEPS), batch_size=ctx.size(PROMPTS), lr=0.0002)
    tree["stages"] = [rl]
    tree["reward"] = {"components": [{"name": "correct", "isolation": "inline"}],
                      "overlong": OVERLONG if arm == "length" else None}
    return tree


def per_correct(run, stage_name: str) -> tuple[float, float]:
    """(tokens per correct answer, tokens per sample) of a stage's final evaluation."""
    recs = [json.loads(x) for x in (run / "eval" / f"{stage_name}_test.jsonl").read_text().splitlines()]
    samples = [s for r in recs for s in r["samples"]]
    return mean([s["len"] for s in samples if s["score"] >= 1]), mean([s["len"] for s in samples])


def run(ctx: Ctx) -> Result:
    sft_run = start(ctx, "verbose", sft_tree(ctx))
    sft = {"pass@1": eval_json(sft_run, "sft")["pass@1"], "tpc": per_correct(sft_run, "sft")[0],
           "len": per_correct(sft_run, "sft")[1]}
    where = ctx.dir(ID)

    def one(arm: str, seed: int) -> dict:
        t0 = time.perf_counter()
        d = train_tree(ctx, rl_tree(ctx, sft_run / "models" / "sft", arm), where, f"{arm}-s{seed}", seed)
        tpc, length = per_correct(d, "rl")
        return {"arm": arm, "seed": seed, "pass@1": eval_json(d, "rl")["pass@1"], "tpc": tpc, "len": length,
                "rollout_len": series(d, "rollout/len_mean", "rl"), "rollout_acc": series(d, "reward/acc", "rl"),
                "wall_s": time.perf_counter() - t0}

    seeds = ctx.seeds[:1] if ctx.quick else ctx.seeds  # quick: one seed (the 20 s budget)
    rows = run_all(where / "results.jsonl", "arm", ARMS, seeds, one)
    return _result(ctx, sft, rows)


def _cut(rs: list[dict], sft: dict) -> list[float]:
    return [1 - r["tpc"] / sft["tpc"] for r in rs]


def _sd(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _result(ctx: Ctx, sft: dict, rows: list[dict]) -> Result:
    by = {a: [r for r in rows if r["arm"] == a] for a in ARMS}
    lines = ["| model | held-out pass@1 | tokens per correct answer | tokens per sample | token cut vs SFT |",
             "|---|---|---|---|---|",
             f"| SFT on verbose traces (start) | {fmt([sft['pass@1']])} | {sft['tpc']:.1f} | {sft['len']:.1f} | - |"]
    for a, rs in by.items():
        lines.append(f"| GRPO, {'correctness only' if a == 'correct' else 'correctness + length penalty'} | "
                     f"{fmt([r['pass@1'] for r in rs])} | {fmt([r['tpc'] for r in rs], 1.0)} | "
                     f"{fmt([r['len'] for r in rs], 1.0)} | {fmt(_cut(rs, sft))} % |")
    cut_c, cut_l = (mean(_cut(by[a], sft)) for a in ARMS)
    dacc_c, dacc_l = (mean([r["pass@1"] for r in by[a]]) - sft["pass@1"] for a in ARMS)
    spread = _sd(_cut(by["length"], sft))
    tldr = cut_l >= 0.30 and dacc_l >= -0.02
    shorter = cut_c >= 0.10 and dacc_c >= -0.02
    if cut_l <= spread:
        verdict = "inconclusive"
    elif tldr and shorter:
        verdict = "reproduced"
    elif tldr or shorter or (cut_l >= 0.15 and dacc_l >= -0.05):  # a smaller cut, accuracy about kept
        verdict = "partly"
    else:
        verdict = "not reproduced"
    reason = (f"rule: reproduced if the length-penalized arm cuts tokens per correct answer by >= 30 % with pass@1 "
              f"at most 2 pt below the SFT start (here {100 * cut_l:.0f} %, {100 * dacc_l:+.1f} pt) and GRPO with "
              f"correctness only already shortens them by >= 10 % at no accuracy loss (here {100 * cut_c:.0f} %, "
              f"{100 * dacc_c:+.1f} pt); partly if one of the two holds or the length arm cuts >= 15 % within 5 pt "
              f"of the SFT pass@1; inconclusive if the length arm's cut is within its seed spread.")
    headline = (f"tokens/correct {sft['tpc']:.0f} after SFT -> {sft['tpc'] * (1 - cut_c):.0f} (GRPO), "
                f"{sft['tpc'] * (1 - cut_l):.0f} (+length penalty); pass@1 {100 * sft['pass@1']:.0f} -> "
                f"{100 * (sft['pass@1'] + dacc_c):.0f} / {100 * (sft['pass@1'] + dacc_l):.0f}%")
    return Result(verdict, reason, headline, "\n".join(lines), _plot(ctx, sft, by))


def _plot(ctx: Ctx, sft: dict, by: dict[str, list[dict]]):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for a, rs in by.items():
        m = min(len(r["rollout_len"]) for r in rs)
        axes[0].plot(range(1, m + 1), [mean([r["rollout_len"][i] for r in rs]) for i in range(m)], label=a)
        axes[1].plot(range(1, m + 1), [100 * mean([r["rollout_acc"][i] for r in rs]) for i in range(m)], label=a)
    axes[0].axhline(sft["len"], color="gray", ls="--", label="SFT start (held-out)")
    axes[0].set(xlabel="RL step", ylabel="tokens per sample", title="rollout length")
    axes[1].axhline(100 * sft["pass@1"], color="gray", ls="--", label="SFT start (held-out)")
    axes[1].set(xlabel="RL step", ylabel="% of rollouts correct", title="accuracy")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
