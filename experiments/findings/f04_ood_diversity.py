"""F4: does RL generalize better than SFT as the test distribution moves away from the
fine-tuning distribution, and does it cost output diversity?"""

from __future__ import annotations

import statistics
from typing import ClassVar

from experiments.findings.common import (
    Ctx,
    Result,
    default_start,
    eval_json,
    eval_records,
    fmt,
    init_from,
    mean,
    plot_path,
    pyplot,
    run_all,
    stage,
    start,
    train_tree,
    tree_of,
)
from rftkit.tasks.arithmetic import Arithmetic
from rftkit.tasks.base import TASKS
from rftkit.types import ANSWER_MARKER, Problem

ID = "F4"
TITLE = "RL generalizes better out of distribution than SFT, but reduces output diversity"
SHORT = "RL generalizes OOD better than SFT but reduces diversity (Kirk et al.)"
PAPER = ("Kirk, Mediratta, Nalmpantis, Luketina, Hambro, Grefenstette, Raileanu 2024, \"Understanding the "
         "Effects of RLHF on LLM Generalisation and Diversity\", arXiv:2310.06452")
CLAIM = ("Fine-tuning with RL generalizes better than SFT to inputs unlike the fine-tuning data, the more so the "
         "larger the shift, but it makes the outputs markedly less diverse.")
LEVELS = {"id": (10, 39), "near": (40, 69), "far": (70, 99)}
"""Operand ranges: fine-tuning sees `id` only; `near` and `far` move away from it (far: every sum
has three digits, an output length the fine-tuning data never shows)."""
START_SFT_STEPS, STEPS, PROMPTS, GROUP = 4, 30, 16, 8
ARMS = ["sft", "grpo"]
SETUP = f"""
- Task: 2-digit addition with a scratchpad, by operand range (a task `add_range` registered by this
  module). Fine-tuning data: both operands in {LEVELS['id'][0]}-{LEVELS['id'][1]} (**ID**). Test levels
  of increasing shift, 100 problems each: **ID**, **near** (operands {LEVELS['near'][0]}-{LEVELS['near'][1]}),
  **far** ({LEVELS['far'][0]}-{LEVELS['far'][1]}: every sum has 3 digits, never seen in fine-tuning).
- Model and start: the default start's base (micro GPT pretrained on noisy demos of *all* 2-digit sums, so
  the shifted ranges were seen in pretraining, as in the paper, where the shift is relative to the
  fine-tuning data), then a short SFT on ID demos ({START_SFT_STEPS} steps x 32, lr 1e-4; start
  `f4_id_sft`, trained once with seed 0). The `strings` task the plan named was tried first: a micro base
  learned none of its ops in 400 steps (pass@1 0.1 %), so there was no start to fine-tune.
- Arms from that start, same steps and sequences: **sft**: {STEPS} steps x {PROMPTS * GROUP} ID demos;
  **grpo**: {STEPS} steps x {PROMPTS} ID prompts x {GROUP} samples (`grpo.yaml`: k3 KL 0.01); lr 2e-4 for
  both. Seeds 0 1 2 vary the fine-tuning runs and the train and test draws.
- Measured per level: pass@1 (16 samples at temperature 1), greedy accuracy; diversity: distinct answers
  among the 16 samples and distinct-2 (characters) per problem, and the policy entropy over all levels.
- Differs from the paper: RLHF there is PPO against a learned reward model on summarization and
  instruction following (OOD = other datasets); here the reward is exact match and the shift is the
  operand range.
"""
BUDGET = "≈ 7 CPU-min for 3 seeds (6 fine-tuning runs of 30 steps)"
READING = """
- Both arms remove the start's answer-corruption habit on ID (pass@1 68.6 -> 99.5 SFT, 98.8 GRPO) and carry
  most of it to the shifted ranges (near 55.3 -> 85.5 / 79.8, far 64.4 -> 87.6 / 82.6). SFT is ahead at every
  level and its lead grows off-distribution (RL - SFT: ID -0.7, near -5.7, far -5.0 pts): the reverse of the
  paper's signature, in every seed at near and far.
- Diversity collapses in both arms (distinct answers on ID 5.2 -> 1.1-1.2), and SFT ends *less* diverse than
  GRPO (2.12 vs 2.73 distinct answers over the levels, entropy 0.026 vs 0.039 nats). The SFT data here hold one
  deterministic answer per prompt, so SFT is itself a mode-seeker; in the paper the SFT targets are diverse
  human summaries, which is where RL's narrowing shows.
- Caveats: at an equal number of sequences SFT gets 3,840 correct demonstrations while most of GRPO's 3,840
  samples are already right (little signal per step, KL 0.01); the OOD inputs were seen in pretraining.
"""


@TASKS.register("add_range")
class AddRange(Arithmetic):
    """Addition (scratchpad) with both operands drawn uniformly from lo..hi; the difficulty
    argument is ignored (the range is the shift knob)."""

    name: ClassVar[str] = "add_range"
    difficulty_doc: ClassVar[str] = "ignored: operands come from lo..hi"

    def __init__(self, *, lo: int = 10, hi: int = 99) -> None:
        super().__init__(op="add", scratchpad=True)
        self.lo, self.hi = lo, hi

    def sample(self, rng, difficulty: int) -> Problem:
        a, b = rng.randint(self.lo, self.hi), rng.randint(self.lo, self.hi)
        value, trace = self._solve(a, b)
        return Problem(task=self.name, prompt=f"add:{a}+{b}=", answer=str(value), verifier="exact", difficulty=2,
                       demo=f"{trace}{ANSWER_MARKER}{value}", source=self.name, meta={"a": a, "b": b, "op": "add"})


def data(ctx: Ctx) -> dict:
    tasks = [{"name": "add_range", "label": k, "difficulty": [2, 2], "ood_difficulty": [2, 2],
              "params": {"lo": lo, "hi": hi}} for k, (lo, hi) in LEVELS.items()]
    return {"tasks": tasks, "train_size": 3000, "test_size": ctx.size(100), "ood_size": 0}


def base_tree(ctx: Ctx) -> dict:
    tree = tree_of("default")
    tree["data"] = data(ctx)
    tree["eval"] = {"n_samples": ctx.samples(16), "ks": [1, 16], "splits": ["test"]}
    return tree


def start_tree(ctx: Ctx) -> dict:
    tree = init_from(base_tree(ctx), default_start(ctx) / "models" / "base")
    sft = stage(tree, "sft")
    sft.update(steps=START_SFT_STEPS, batch_size=32, lr=0.0001, tasks=["id"])
    tree["stages"] = [sft]
    return tree


def arm_tree(ctx: Ctx, arm: str, model) -> dict:
    tree = init_from(base_tree(ctx), model)
    if arm == "sft":
        st = {"name": "train", "steps": ctx.steps(STEPS), "batch_size": PROMPTS * GROUP,
              "objectives": [{"name": "sft"}]}
    else:
        st = {**stage(tree_of("grpo"), "rl"), "name": "train", "steps": ctx.steps(STEPS), "batch_size": PROMPTS}
    st.update(lr=0.0002, tasks=["id"])
    tree["stages"] = [st]
    return tree


def level_stats(summary: dict, records: list[dict]) -> dict:
    """pass@1, greedy and diversity per level (source) of one evaluation."""
    out = {"entropy": summary.get("entropy", float("nan"))}
    for lv in LEVELS:
        recs = [r for r in records if r["source"] == lv]
        out[lv] = {"pass@1": summary.get(f"pass@1/src={lv}", float("nan")),
                   "greedy": summary.get(f"greedy_acc/src={lv}", float("nan")),
                   "distinct": mean([len({s["parsed"] for s in r["samples"] if s["parsed"] is not None})
                                     for r in recs]),
                   "distinct_2": mean([r["distinct_n"][1] for r in recs])}
    return out


def run_arm(ctx: Ctx, arm: str, seed: int, model) -> dict:
    run = train_tree(ctx, arm_tree(ctx, arm, model), ctx.dir(ID), f"{arm}-s{seed}", seed=seed)
    return {"arm": arm, "seed": seed, **level_stats(eval_json(run, "train"), eval_records(run, "train"))}


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def verdict(rows: list[dict]) -> tuple[str, str, str]:
    by = {(r["arm"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    gap = {lv: [by["grpo", s][lv]["pass@1"] - by["sft", s][lv]["pass@1"] for s in seeds] for lv in LEVELS}
    widen = [f - i for f, i in zip(gap["far"], gap["id"])]
    gen = mean(gap["far"]) > 0 and mean(widen) > max(sd(widen), 0.01)
    less = [mean([by[a, s][lv]["distinct"] for s in seeds for lv in LEVELS]) for a in ARMS]
    ent = [mean([by[a, s]["entropy"] for s in seeds]) for a in ARMS]
    div = all(mean([by["grpo", s][lv]["distinct"] for s in seeds]) < mean([by["sft", s][lv]["distinct"]
              for s in seeds]) for lv in LEVELS) and ent[1] < ent[0]
    if gen and div:
        v = "reproduced"
    elif gen or div:
        v = "partly"
    else:
        v = "inconclusive" if abs(mean(widen)) <= sd(widen) else "not reproduced"
    reason = (f"rule: RL generalizes better if its pass@1 gap over SFT at the far level is positive and exceeds "
              f"the ID gap by more than max(1 pt, std over seeds) (far gap {100 * mean(gap['far']):+.1f}, ID gap "
              f"{100 * mean(gap['id']):+.1f}, widening {100 * mean(widen):+.1f} ± {100 * sd(widen):.1f} pts: "
              f"{'yes' if gen else 'no'}); RL is less diverse if its distinct answers are lower at every level and "
              f"its entropy lower (distinct answers {less[1]:.2f} vs {less[0]:.2f}, entropy {ent[1]:.3f} vs "
              f"{ent[0]:.3f} nats: {'yes' if div else 'no'}); both: reproduced, one: partly; neither: inconclusive "
              "when the widening is within its std, else not reproduced.")
    head = (f"pass@1 RL-SFT gap ID {100 * mean(gap['id']):+.1f}, near {100 * mean(gap['near']):+.1f}, far "
            f"{100 * mean(gap['far']):+.1f} pts; distinct answers {less[1]:.1f} vs {less[0]:.1f}")
    return v, reason, head


def table(rows: list[dict], start_row: dict) -> str:
    head = " | ".join(f"{lv} pass@1 (%) | {lv} distinct answers" for lv in LEVELS)
    lines = [f"| arm | {head} | distinct-2 (ID) | entropy (nats) |", "|---" * (2 + 2 * len(LEVELS) + 1) + "|"]

    def row(name: str, rs: list[dict]) -> str:
        cells = " | ".join(f"{fmt([r[lv]['pass@1'] for r in rs])} | {fmt([r[lv]['distinct'] for r in rs], 1, 2)}"
                           for lv in LEVELS)
        return (f"| {name} | {cells} | {fmt([r['id']['distinct_2'] for r in rs], 1, 3)} | "
                f"{fmt([r['entropy'] for r in rs], 1, 3)} |")

    lines.append(row("start (base + short SFT)", [start_row]))
    lines += [row(arm, [r for r in rows if r["arm"] == arm]) for arm in ARMS]
    return "\n".join(lines)


def plot(ctx: Ctx, rows: list[dict], start_row: dict):
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = range(len(LEVELS))
    for i, (arm, label) in enumerate([("start", "start"), ("sft", "SFT"), ("grpo", "SFT→GRPO")]):
        rs = [start_row] if arm == "start" else [r for r in rows if r["arm"] == arm]
        acc = [100 * mean([r[lv]["pass@1"] for r in rs]) for lv in LEVELS]
        err = [100 * sd([r[lv]["pass@1"] for r in rs]) for lv in LEVELS]
        ax.errorbar(xs, acc, yerr=err, marker="o", capsize=3, label=label, ls="--" if arm == "start" else "-",
                    color=f"C{i}")
        dist = [mean([r[lv]["distinct"] for r in rs]) for lv in LEVELS]
        bx.bar([x + (i - 1) * 0.27 for x in xs], dist, width=0.27, label=label, color=f"C{i}")
    for a in (ax, bx):
        a.set_xticks(list(xs), [f"{k}\n{lo}-{hi}" for k, (lo, hi) in LEVELS.items()])
        a.set_xlabel("test level (operand range; fine-tuned on id)")
    ax.set_ylabel("pass@1 (%)")
    bx.set_ylabel("distinct answers among 16 samples")
    ax.legend()
    bx.legend()
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(ctx: Ctx) -> Result:
    st = start(ctx, "f4_id_sft", start_tree(ctx))
    start_row = level_stats(eval_json(st, "sft"), eval_records(st, "sft"))
    rows = run_all(ctx.dir(ID, "results.jsonl"), "arm", ARMS, ctx.seeds,
                   lambda a, s: run_arm(ctx, a, s, st / "models" / "sft"))
    v, reason, head = verdict(rows)
    return Result(v, reason, head, table(rows, start_row), plot(ctx, rows, start_row))
