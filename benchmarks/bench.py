"""rftkit vs TRL on identical settings, and rftkit's engine vs the machine's limits (docs/benchmarks.md).

    .venv/bin/python benchmarks/bench.py [--quick] [--steps N] [--only grpo,engine,sft] [--out FILE]

Builds everything locally (char tokenizer, random Qwen2 ~1.84M params, "a+b=" task), trains a
plain-torch SFT warm start, then runs each framework in its own subprocess (peak RSS is that
process's own ru_maxrss). Prints a table and writes JSON. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import gpu  # noqa: E402

PARTS = ("grpo", "engine", "sft", "learn", "gpu")
TRL_LRS = (1e-5, 3e-5, 1e-4)


def have_trl() -> bool:
    return importlib.util.find_spec("trl") is not None


def run_worker(name: str, args: dict, workdir: Path) -> dict:
    """Run one worker in a fresh interpreter; its result JSON (or the error) comes back."""
    af, of = workdir / f"{name}.args.json", workdir / f"{name}.result.json"
    af.write_text(json.dumps(args))
    of.unlink(missing_ok=True)
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import workers; "
            f"workers.main({name!r}, {str(af)!r}, {str(of)!r})")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0 or not of.is_file():
        return {"error": f"worker {name} failed (rc {proc.returncode}): {proc.stderr[-3000:]}"}
    res = json.loads(of.read_text())
    res["wall_s"] = time.perf_counter() - t0
    return res


def ratio(a, b):
    try:
        return a / b
    except (TypeError, ZeroDivisionError):
        return float("nan")


def run(opts) -> dict:
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="rftkit_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    only = set(opts.only.split(",")) if opts.only else set(PARTS)
    steps = opts.steps if opts.steps is not None else (3 if opts.quick else 20)
    warm = opts.warmup
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
           "machine": {"nproc": os.cpu_count(), "cpu": common.cpu_model(), "load_start": common.loadavg(),
                       "threads": opts.threads},
           "settings": {"steps": steps, "warmup": warm, "quick": opts.quick}}
    out["workdir"] = str(workdir)
    sft_dir = workdir / "sft_warm_start"
    sft_steps = opts.sft_steps if opts.sft_steps is not None else (100 if opts.quick else 1500)
    cosine = opts.sft_schedule == "cosine"
    out["warm_start"] = common.sft_warm_start(sft_dir, steps=sft_steps, lr=opts.sft_lr, schedule=opts.sft_schedule,
                                              clip=1.0 if cosine else 0.0,
                                              target_acc=None if opts.quick or not cosine else opts.warm_acc)
    floor = opts.min_warm_acc if opts.min_warm_acc is not None else (0.0 if opts.quick else common.WARM_MIN_ACC)
    out["warm_start"]["min_acc"] = floor
    common.check_warm_start(out["warm_start"], floor)
    base = {"model": str(sft_dir), "workdir": str(workdir), "threads": opts.threads, "seed": opts.seed}
    if "grpo" in only:
        a = {**base, "steps": steps, "warmup": warm, "lr": 1e-4}
        out["grpo"] = {"rftkit": run_worker("grpo_rftkit", a, workdir),
                       "trl": run_worker("grpo_trl", a, workdir) if have_trl() else {"error": "trl not installed"}}
    if "engine" in only:
        a = {**base, "prompts": 128 if not opts.quick else 32, "reps": 1 if opts.quick else 3,
             "big": not opts.quick or opts.big, "mm_n": 1024 if opts.quick else 2048}
        out["engine"] = run_worker("engine", a, workdir)
    if "sft" in only:
        a = {**base, "steps": 50 if opts.steps is None and not opts.quick else steps, "warmup": warm, "lr": 1e-4}
        out["sft"] = {"rftkit": run_worker("sft_rftkit", a, workdir),
                      "trl": run_worker("sft_trl", a, workdir) if have_trl() else {"error": "trl not installed"}}
    if "learn" in only:
        a = {**base, "heldout": opts.heldout, "eval_every": opts.eval_every, "max_steps": opts.learn_steps,
             "recipe": opts.learn_recipe,
             "target": opts.target}
        out["learn"] = {"rftkit": run_worker("learn_rftkit", a, workdir)}
        curve = out["learn"]["rftkit"].get("curve")
        if curve:  # its first point is the start, the same model and problems TRL would start from
            common.check_headroom(curve[0]["acc"], opts.target, opts.min_headroom)
        for lr in TRL_LRS if have_trl() else ():
            out["learn"][f"trl lr={lr:g}"] = run_worker("learn_trl", {**a, "lr": lr}, workdir)
    if "gpu" in only:
        import torch

        out["gpu"] = (gpu.run(run_worker, {**base, "have_trl": have_trl()}, workdir, opts.quick)
                      if torch.cuda.is_available() else "not measured (no CUDA device on this machine)")
    out["machine"]["load_end"] = common.loadavg()
    return out


def share_of_ceiling(gflops: float, ceiling: float, dtype: str) -> str:
    """"x% of <dtype> ceiling", with the ceiling measured next to the figure (workers.engine).
    A figure above it means the ceiling was underestimated (frequency or load changed between
    the two): that is said, never printed as more than 100 %."""
    if not ceiling or gflops > ceiling:
        return f"above the {dtype} ceiling measured next to it ({gflops:.1f} vs {ceiling:.1f} GFLOP/s): not a share"
    return f"{100 * gflops / ceiling:.1f}% of {dtype} ceiling"


def rows(res: dict) -> list[tuple[str, str, str, str]]:
    """(measure, rftkit, reference, ratio) rows of the printed table."""
    out = []
    g = res.get("grpo")
    if g:
        r, t = g["rftkit"], g["trl"]
        out.append(("GRPO median step (s)", f"{r.get('median_step_s', float('nan')):.3f}",
                    f"TRL {t.get('median_step_s', float('nan')):.3f}",
                    f"{ratio(t.get('median_step_s'), r.get('median_step_s')):.2f}x faster"))
        tps = {k: ratio(sum(v.get("gen_tokens", [])), sum(v.get("step_times", []))) for k, v in g.items()}
        out.append(("GRPO generated tok/s (whole step)", f"{tps['rftkit']:.0f}", f"TRL {tps['trl']:.0f}",
                    f"{ratio(tps['rftkit'], tps['trl']):.2f}x"))
        out.append(("GRPO peak RSS (MB)", f"{r.get('peak_rss_mb', float('nan')):.0f}",
                    f"TRL {t.get('peak_rss_mb', float('nan')):.0f}",
                    f"{ratio(r.get('peak_rss_mb'), t.get('peak_rss_mb')):.2f} of TRL"))
        for ph in ("time/rollout", "time/reward", "time/update"):
            out.append((f"GRPO {ph} (median s)", f"{r.get('phases', {}).get(ph, float('nan')):.3f}",
                        f"TRL {t.get('phases', {}).get(ph, float('nan')):.3f}", ""))
    e = res.get("engine")
    if e and "error" not in e:
        c = e["ceiling_gflops"]
        out.append(("matmul ceiling fp32 / bf16 (GFLOP/s)", f"{c['float32']:.1f}", f"bf16 {c['bfloat16']:.1f}", ""))
        tn = e["tiny"]
        out.append(("engine tok/s, tiny fp32 (vs generate)", f"{tn['rftkit_tok_s']:.0f}",
                    f"generate {tn['generate_tok_s']:.0f}", f"{ratio(tn['rftkit_tok_s'], tn['generate_tok_s']):.2f}x"))
        tg = e.get("tiny_groups")
        if tg:
            out.append((f"engine tok/s, tiny fp32, {tg['prompts']} prompts x {tg['group']} (RL layout)",
                        f"{tg['rftkit_tok_s']:.0f}", f"generate {tg['generate_tok_s']:.0f}",
                        f"{ratio(tg['rftkit_tok_s'], tg['generate_tok_s']):.2f}x"))
        bt = e.get("builtin_tiny")
        if bt:
            out.append(("engine tok/s, built-in GPT micro", f"{bt['tok_s']:.0f}", "HF path above", ""))
        for dtp, v in e.get("25m", {}).items():
            out.append((f"engine tok/s, 25M {dtp}", f"{v['rftkit_tok_s']:.0f}", f"generate {v['generate_tok_s']:.0f}",
                        f"{ratio(v['rftkit_tok_s'], v['generate_tok_s']):.2f}x; "
                        + share_of_ceiling(v["rftkit_gflops"], v.get("ceiling_gflops", c[dtp]), dtp)))
        for dtp, v in e.get("25m_train", {}).items():
            out.append((f"train fwd+bwd+AdamW, 25M {dtp} (GFLOP/s)", f"{v['gflops']:.1f}", "",
                        share_of_ceiling(v["gflops"], v.get("ceiling_gflops", c[dtp]), dtp)))
    elif e:
        out.append(("engine", "error", e["error"][-200:], ""))
    s = res.get("sft")
    if s:
        r, t = s["rftkit"], s["trl"]
        out.append(("SFT samples/s", f"{r.get('samples_per_s', float('nan')):.1f}",
                    f"TRL {t.get('samples_per_s', float('nan')):.1f}",
                    f"{ratio(r.get('samples_per_s'), t.get('samples_per_s')):.2f}x"))
    out += learn_rows(res.get("learn"))
    out += gpu.rows(res.get("gpu", "not run"))
    return out


def learn_rows(learn: dict | None) -> list[tuple[str, str, str, str]]:
    """Samples / training seconds to the target accuracy: rftkit vs TRL's best lr (the fastest)."""
    if not learn:
        return [("learning speed", "not run (--only learn)", "", "")]
    fmt = lambda v: "not reached" if not v.get("reached") else (  # noqa: E731
        f"{v['samples_to_target']} samples, {v['train_s_to_target']:.0f} s")
    trl = {k: v for k, v in learn.items() if k.startswith("trl") and "error" not in v}
    best = min(trl.items(), key=lambda kv: kv[1]["train_s_to_target"] if kv[1].get("reached") else float("inf"),
               default=(None, {}))
    r = learn.get("rftkit", {})
    target = r.get("target", best[1].get("target", float("nan")))
    rows = [(f"learning speed to {target:.2f} held-out acc", fmt(r) if "error" not in r else "error",
             f"TRL best ({best[0]}): {fmt(best[1])}" if best[0] else "TRL: error or not installed",
             f"{ratio(best[1].get('train_s_to_target'), r.get('train_s_to_target')):.2f}x less time"
             if r.get("reached") and best[1].get("reached") else "")]
    for k, v in learn.items():
        if "error" in v:
            rows.append((f"  learning speed, {k}", "error: " + v["error"][-100:], "", ""))
    return rows


def print_table(res: dict) -> None:
    print(f"# {res['date']}  nproc={res['machine']['nproc']}  cpu={res['machine']['cpu']}  "
          f"load {res['machine']['load_start']} -> {res['machine']['load_end']}")
    table = rows(res)
    w = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    for part in ("grpo", "sft"):
        for fw, v in (res.get(part) or {}).items():
            if "error" in v:
                print(f"[{part}/{fw}] {v['error'][-600:]}")
    g = res.get("grpo")
    if g:
        for fw, v in g.items():
            print(f"reward curve {fw}: " + " ".join(f"{x:.2f}" for x in v.get("rewards", []) if x is not None))
    for k, v in (res.get("learn") or {}).items():
        print(f"held-out accuracy every eval, {k}: " + " ".join(f"{p['acc']:.2f}" for p in v.get("curve", [])))


def plot(res: dict, path: Path) -> None:
    """Step time by phase, both frameworks (stacked bars), and both reward curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = res["grpo"]
    learn = {k: v for k, v in (res.get("learn") or {}).items() if v.get("curve")}
    fig, axes = plt.subplots(1, 3 if learn else 2, figsize=(15 if learn else 10, 4))
    ax, ax2 = axes[0], axes[1]
    if learn:
        for k, v in learn.items():
            axes[2].plot([p["train_s"] for p in v["curve"]], [p["acc"] for p in v["curve"]], marker=".", label=k)
        axes[2].axhline(next(iter(learn.values()))["target"], color="k", lw=0.8, ls="--")
        axes[2].set_xlabel("training seconds (evaluation excluded)")
        axes[2].set_ylabel("held-out greedy accuracy")
        axes[2].set_title("learning speed from the same SFT start")
        axes[2].legend(fontsize=8)
    names = [k for k in ("rftkit", "trl") if "phases" in g[k]]
    bottom = [0.0] * len(names)
    for ph in ("time/rollout", "time/reward", "time/update"):
        vals = [max(0.0, g[n]["phases"][ph]) for n in names]
        ax.bar(names, vals, bottom=bottom, label=ph.split("/")[1])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("median seconds per GRPO step")
    ax.set_title("GRPO step time by phase")
    ax.legend()
    for n in names:
        ax2.plot([x for x in g[n].get("rewards", []) if x is not None], label=n)
    ax2.set_xlabel("step")
    ax2.set_ylabel("mean reward")
    ax2.set_title("reward curves")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 timed steps, small engine run")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; --quick 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--only", default="", help=f"comma list of {','.join(PARTS)}")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0 = torch default)")
    p.add_argument("--sft-steps", type=int, default=None,
                   help="most plain-torch SFT warm-start steps (default 1500; --quick 100)")
    p.add_argument("--sft-lr", type=float, default=common.WARM_LR, help="peak lr of the SFT warm start")
    p.add_argument("--sft-schedule", choices=["cosine", "constant"], default="cosine",
                   help="cosine: warm-up, cosine decay and grad clipping 1.0 (default); constant: the old start "
                        "(constant lr, no clipping; with --sft-lr 3e-3 it reproduces the 2026-11-24 results' start)")
    p.add_argument("--warm-acc", type=float, default=common.WARM_TARGET_ACC,
                   help="the warm start stops at the first check reaching this held-out greedy accuracy "
                        "(not with --quick or --sft-schedule constant)")
    p.add_argument("--min-warm-acc", type=float, default=None,
                   help=f"refuse to time anything if the warm start's held-out greedy accuracy is below this "
                        f"(default {common.WARM_MIN_ACC}; 0 with --quick, whose start is a smoke test)")
    p.add_argument("--big", action="store_true", help="also the 25M model in --quick")
    p.add_argument("--target", type=float, default=0.9, help="learning speed: held-out greedy accuracy to reach")
    p.add_argument("--min-headroom", type=float, default=0.1,
                   help="learning speed: refuse a start scoring more than target - this on the held-out problems")
    p.add_argument("--learn-steps", type=int, default=800, help="learning speed: most GRPO steps per run")
    p.add_argument("--eval-every", type=int, default=10, help="learning speed: steps between held-out evals")
    p.add_argument("--heldout", type=int, default=1000,
                   help="learning speed: held-out problems (1000: about 1 point of standard error at 0.9)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the runs: sampling, prompt order and the learning part's train/held-out split "
                        "(shared by both frameworks); the SFT warm start stays the same")
    p.add_argument("--learn-recipe", default="default",
                   help="learning speed: the shipped recipe whose rl stage is rftkit's GRPO (default: `rftkit run`'s)")
    p.add_argument("--workdir", default=None, help="models and runs (default: a fresh temp folder)")
    p.add_argument("--out", default=None, help="result JSON (default: WORKDIR/bench.json)")
    p.add_argument("--plot", default=None, help="write the phase/reward plot here (PNG)")
    p.add_argument("--replot", nargs="+", default=None, metavar="JSON",
                   help="run nothing: merge these result files (later parts override) and print/plot them")
    opts = p.parse_args(argv)
    if opts.replot:
        res = {}
        for f in opts.replot:
            res.update({k: v for k, v in json.loads(Path(f).read_text()).items() if k in PARTS or k not in res})
        print_table(res)
        if opts.plot:
            plot(res, Path(opts.plot))
        return res
    res = run(opts)
    out = Path(opts.out or Path(res.get("workdir", opts.workdir or tempfile.gettempdir())) / "bench.json")
    out.write_text(json.dumps(res, indent=1))
    print_table(res)
    print(f"JSON: {out}")
    if opts.plot and res.get("grpo"):
        plot(res, Path(opts.plot))
        print(f"plot: {opts.plot}")
    return res


if __name__ == "__main__":
    main()
