"""F13: does the model's own log-prob pick right answers more often than it samples them, and
can SFT on those picks (SFT-sharpening) amortize the selection into the model?"""

from __future__ import annotations

from pathlib import Path

from experiments.findings.common import (
    Ctx,
    Result,
    default_start,
    evaluate_model,
    fmt,
    init_from,
    mean,
    plot_path,
    pyplot,
    run_all,
    stage,
    train_tree,
    tree_of,
)
from rftkit.data.demos import DEMO_SOURCES, _Stateless, groups
from rftkit.eval.scaling import ScalingSpec

ID = "F13"
TITLE = "Sharpening: the model's own log-prob verifies better than it generates"
SHORT = "Best-of-N by own log-prob beats one sample; SFT on it amortizes (Sharpening)"
PAPER = ('Huang et al. 2024, "Self-Improvement in Language Models: The Sharpening Mechanism", arXiv:2412.01951')
CLAIM = ("A model is a better verifier than generator: choosing among its own N samples by its own likelihood "
         "(best-of-N by log-prob) is more accurate than one sample, when the model covers the right answer; SFT on "
         "the best-of-N picks (SFT-sharpening) moves that accuracy into a single sample.")
PICK = "logprob_top"
N, PICK_N = 16, 8
SETUP = f"""The default testbed's start (trained once with seed 0): **base**, the micro model pretrained on
noisy demos of 2-digit addition with a scratchpad (70 % of the demo answers corrupted), and **SFT**, 10
SFT steps on clean demos from it. Each model draws n = {N} samples (temperature 1) on 100 held-out
2-digit problems (**test**: good coverage) and 100 3-digit problems (**ood**: poor coverage; the base never
saw 3-digit sums) and is scored by selectors over the same samples (`evaluate_model(..., scaling=
ScalingSpec())`): one sample (`avg@n`), best-of-N by the model's own mean token log-prob
(`bon/logprob`), majority vote (`maj`), log-prob-weighted vote (`wmaj/logprob`), and the verifier oracle
(`bon/verifier` = pass@N); plus greedy decoding. Curves give each selector's expected accuracy on a
random k-subset, k = 1..{N}. **low-coverage**: the test problems on which at most 4 of a model's 16
samples are right (chosen from the same samples: the levels are biased, the gap between selectors
given that many right samples is not). **SFT-sharpening**: from the base, 20 steps of SFT (lr 3e-4) on
the base's own best-of-{PICK_N} picks by log-prob (16 prompts per step, 8 samples each drawn from the frozen
base; the picks never see the answer), a demo source (`{PICK}`) defined in this module. Seeds 0-2 are the
sampling seeds of the evaluations (and the sharpening run's seed); the test sets are fixed (data seed
0). Differs from the paper (LLMs on math and QA, N up to 64, also RLHF-sharpening): a 1.8M-parameter
model on addition; RL with log-prob reward is not run."""
READING = """**Reading.**
- Good coverage (test): one sample of the base is right 35.0 ± 2.4 % of the time, yet the likeliest of
  its 16 samples (own mean log-prob) is right 100 %: as good as the verifier oracle and above the
  majority vote (92.7 %) and the log-prob-weighted vote (96.0 %); at N = 8 it is 96.1 % vs 75.5 % for the
  vote. The SFT model goes from 88.5 to 98.0 %. The noisy demos corrupted answers at random, so the
  right answer is the mode of the base's distribution, and its likelihood finds it.
- Best-of-N by log-prob lands exactly on greedy decoding for all three models (100 / 98.0 / 96.3 %):
  choosing the likeliest sample approximates the likeliest answer, the target sharpening aims at.
- Coverage: on the 27-37 test problems where the base gets at most 4 of 16 samples right, best-of-16
  by log-prob is still 100 % (vote 77.7 %, one sample 20.7 %); on 3-digit problems (ood) no model samples
  one right answer (pass@16 = 0) and every selector is at 0. The SFT and sharpened rows of the low-coverage
  bucket rest on 0-3 problems each.
- SFT-sharpening works: 20 SFT steps on the base's own best-of-8 picks (94 % of the picks right on
  average; the answers are never seen) lift one-sample accuracy from 35.0 to 91.6 ± 1.7 %, 57 of the 61
  points between one sample and best-of-8. Caveat: the base's greedy answer is already right on every
  test problem, so here sharpening moves into sampling what greedy decoding already does."""
BUDGET = "≈ 5 min for 3 seeds on 2 cores (six evaluations of 2 x 1,600 samples, three short SFT runs)"
KS = [1, 2, 4, 8, 16]
SELECTORS = {"one sample": "avg@n", "bon/logprob": "bon/logprob@n", "maj": "maj@16", "wmaj/logprob": "wmaj/logprob@n",
             "oracle (pass@N)": "bon/verifier@n"}
PER_RECORD = {"bon/logprob": "bon/logprob@n", "wmaj/logprob": "wmaj/logprob@n", "oracle (pass@N)": "bon/verifier@n"}
MODELS = ["base", "sft", "sharpened"]
SPLITS = ("test", "low", "ood")


class LogprobTop(_Stateless):
    """Each group's sample with the highest mean token log-prob under the sampling model (the
    rollout's own log-probs; ties: first row), whatever its reward: best-of-N by the model's
    likelihood, the picks of SFT-sharpening. Metrics: mix/self_demos, sharpen/pick_acc (share
    of picks the verifier accepts, for the log only)."""

    def __call__(self, problems, batch, rng):
        if batch is None:
            return [], {"mix/self_demos": 0.0}
        score = ((batch.old_logp * batch.mask).sum(1) / batch.mask.sum(1).clamp(min=1)).tolist()
        picks = [max(rows, key=lambda r: (score[r], -r)) for rows in groups(batch)]
        acc = mean(float(batch.verdicts[r].correct) for r in picks)
        return [(batch.problems[r], batch.texts[r]) for r in picks], {"mix/self_demos": float(len(picks)),
                                                                      "sharpen/pick_acc": acc}


if PICK not in DEMO_SOURCES:  # once per process, however often this module is loaded
    DEMO_SOURCES.register(PICK, needs={"rollout"})(LogprobTop)


def eval_tree(ctx: Ctx) -> dict:
    tree = tree_of("default")
    tree["data"].update(test_size=ctx.size(100), ood_size=ctx.size(100))
    return tree


def selectors(summary: dict, n: int) -> dict:
    """The selectors at N, greedy, and the curves (k = 1, 2, 4, ... up to n) of one split."""
    out = {name: summary[key.replace("@16", f"@{n}")] for name, key in SELECTORS.items()}
    out["greedy"] = summary["greedy_acc"]
    for sel in ("logprob", "verifier", "maj"):
        out[f"curve/{sel}"] = [summary.get(f"curve/{sel}@{k}", float("nan")) for k in KS if k <= n]
    return out


def low_coverage(records: list[dict], n: int) -> dict:
    """The selectors and curves over the problems with at most n/4 right samples (picked by the
    records' own samples), from each record's test-time-scaling values."""
    low = [r for r in records if r["n_correct"] <= n // 4]
    out = {name: mean(r["scaling"][key] for r in low) for name, key in PER_RECORD.items()}
    out.update({"one sample": mean(r["n_correct"] / n for r in low), "problems": len(low),
                "greedy": mean(float(r["greedy"]["score"] >= 1) for r in low),
                "maj": mean(r["scaling"][f"curve/maj@{n}"] for r in low)})
    for sel in ("logprob", "verifier", "maj"):
        out[f"curve/{sel}"] = [mean(r["scaling"][f"curve/{sel}@{k}"] for r in low) for k in KS if k <= n]
    return out


def evaluation(ctx: Ctx, model_dir: Path, name: str, seed: int) -> dict:
    n = ctx.samples(N)
    res = evaluate_model(model_dir, eval_tree(ctx), n=n, ks=[k for k in KS if k <= n], seed=seed,
                         splits=("test", "ood"), scaling=ScalingSpec(curve=True))
    row = {"model": name, "seed": seed, **{split: selectors(s, n) for split, (s, _) in res.items()}}
    row["low"] = low_coverage(res["test"][1], n)
    return row


def sharpen(ctx: Ctx, base: Path, seed: int) -> Path:
    """SFT on the frozen base's best-of-PICK_N picks by its own log-prob (SFT-sharpening)."""
    tree = init_from(tree_of("raft"), base)
    rl = stage(tree, "rl")
    rl.update(name="sharpen", steps=ctx.steps(20), batch_size=ctx.size(16), demos={"name": PICK})
    rl["rollout"] = {"policy": "reference"}
    tree["stages"] = [rl]
    tree["rollout"]["group_size"] = PICK_N
    tree["data"].update(test_size=ctx.size(100), ood_size=0)
    tree["eval"] = {"n_samples": 1, "ks": [1], "splits": ["test"]}  # evaluated below like the other models
    return train_tree(ctx, tree, ctx.dir(ID), f"sharpen-s{seed}", seed) / "models" / "sharpen"


def rows_of(rows: list[dict], model: str) -> list[dict]:
    return [r for r in rows if r["model"] == model]


COLUMNS = ["greedy", "one sample", "bon/logprob", "maj", "wmaj/logprob", "oracle (pass@N)"]
FEW = 10
"""Low-coverage buckets with fewer problems than this (per seed, on average) are left out of the plot."""
LABEL = {"test": "test (2 digits)", "low": "test, low-coverage problems", "ood": "ood (3 digits)"}


def table(rows: list[dict]) -> str:
    lines = ["| split | model | " + " | ".join(f"{c} (%)" for c in COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for split in SPLITS:
        for m in MODELS:
            rs = rows_of(rows, m)
            extra = f" ({'/'.join(str(r['low']['problems']) for r in rs)} problems)" if split == "low" else ""
            lines.append(f"| {LABEL[split]} | {m}{extra} | " + " | ".join(fmt([r[split][c] for r in rs])
                                                                         for c in COLUMNS) + " |")
    return "\n".join(lines)


def plot(ctx: Ctx, rows: list[dict]) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(10, 4), sharey=True)
    styles = {"logprob": "-", "maj": ":", "verifier": "--"}
    for ax, split in zip(axes, SPLITS):
        for i, m in enumerate(MODELS):
            rs = rows_of(rows, m)
            if split == "low" and mean(r["low"]["problems"] for r in rs) < FEW:
                continue  # a curve over a handful of problems says nothing
            ks = KS[:len(rs[0][split]["curve/logprob"])]
            for sel, ls in styles.items():
                ys = [100 * mean(r[split][f"curve/{sel}"][j] for r in rs) for j in range(len(ks))]
                ax.plot(ks, ys, ls, color=f"C{i}", marker="o", ms=3, label=f"{m}: {sel}" if split == "test" else None)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (samples selected from)")
        ax.set_title(LABEL[split], fontsize=10)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=7, ncol=1)
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def gaps(rows: list[dict], model: str, split: str) -> list[float]:
    """bon/logprob minus one sample, per seed."""
    return [r[split]["bon/logprob"] - r[split]["one sample"] for r in rows_of(rows, model)]


def verdict(rows: list[dict]) -> tuple[str, str]:
    """(a) BoN by own log-prob above one sample on test in every seed, for base and SFT;
    (b) SFT-sharpening recovers at least half the base's one-sample -> BoN@8 gap at one sample."""
    a = {m: min(gaps(rows, m, "test")) > 0 for m in ("base", "sft")}
    base, sharp = rows_of(rows, "base"), rows_of(rows, "sharpened")
    j = min(KS.index(PICK_N), len(base[0]["test"]["curve/logprob"]) - 1)
    gap = mean(r["test"]["curve/logprob"][j] - r["test"]["one sample"] for r in base)
    gain = mean(s["test"]["one sample"] for s in sharp) - mean(r["test"]["one sample"] for r in base)
    b = gap > 0 and gain >= gap / 2
    if all(a.values()):
        v = "reproduced" if b else "partly"
    elif max(gaps(rows, "base", "test")) <= 0:
        v = "not reproduced"
    else:
        v = "partly" if any(a.values()) or b else "inconclusive"
    ood = mean(r["ood"]["oracle (pass@N)"] for r in base)
    why = (f"Rule: (a) best-of-{N} by the model's own log-prob above one sample on test in every seed, for the base "
           f"and the SFT model, and (b) SFT-sharpening's one-sample accuracy gains at least half of the base's gap "
           f"from one sample to best-of-{PICK_N} by log-prob; both: reproduced, (a) only: partly, BoN never above "
           f"for the base: not reproduced. (a) base {'yes' if a['base'] else 'no'}, SFT {'yes' if a['sft'] else 'no'}; "
           f"(b) gap {100 * gap:.1f} points, sharpening gains {100 * gain:.1f}: {'yes' if b else 'no'}. On ood the "
           f"base's pass@{N} is {100 * ood:.1f} %: where nothing right is sampled, no selector can help.")
    return v, why


def run(ctx: Ctx) -> Result:
    start = default_start(ctx)
    models = {"base": start / "models" / "base", "sft": start / "models" / "sft"}

    def one(name: str, seed: int) -> dict:
        model = sharpen(ctx, models["base"], seed) if name == "sharpened" else models[name]
        return evaluation(ctx, model, name, seed)

    rows = run_all(ctx.dir(ID, "results.jsonl"), "model", MODELS, ctx.seeds, one)
    v, why = verdict(rows)
    base, sharp = rows_of(rows, "base"), rows_of(rows, "sharpened")
    headline = (f"base test: one sample {fmt([r['test']['one sample'] for r in base])}, BoN-logprob@{N} "
                f"{fmt([r['test']['bon/logprob'] for r in base])}, maj {fmt([r['test']['maj'] for r in base])}; "
                f"sharpened one sample {fmt([r['test']['one sample'] for r in sharp])} %")
    return Result(v, why, headline, table(rows), plot(ctx, rows))
