"""End to end on the tiny recipe: a full run, CLI errors, and SIGKILL-then-resume exactness."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"
ENV = {**os.environ, "RFTKIT_THREADS": "1", "OMP_NUM_THREADS": "1"}


def rftkit(*args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "rftkit", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"rftkit {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _records(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.append({k: v for k, v in r.items() if k != "time" and not k.startswith(("time/", "perf/"))})
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    rftkit("run", str(TINY), f"out_dir={out}", "model.threads=1")
    return out / "tiny"


def test_full_run_writes_everything(full_run):
    for rel in ["config.yaml", "metrics.jsonl", "report.md", "models/init/model.safetensors",
                "models/base/model.json", "models/rl/model.safetensors", "eval/base.json", "eval/rl_test.jsonl",
                "checkpoints/latest"]:
        assert (full_run / rel).exists(), rel
    res = json.loads((full_run / "eval" / "rl.json").read_text())["results"]
    assert set(res) == {"test", "ood"} and {"greedy_acc", "pass@1", "pass@4"} <= set(res["test"])
    keys = set().union(*map(set, _records(full_run)))
    for k in ["reward/mean", "loss/sft", "loss/policy", "policy/kl", "policy/clipfrac", "eval/test/pass@1",
              "weight/sft", "rollout/logprob_diff", "optim/grad_norm"]:
        assert k in keys, k
    ckpts = [p for p in (full_run / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert len(ckpts) == 2  # keep: 2


def test_rerun_never_overwrites(full_run):
    rftkit("run", str(TINY), f"out_dir={full_run.parent}", "model.threads=1", "stages.base.steps=1",
           "stages.rl.steps=1")
    assert (full_run.parent / "tiny-1" / "eval" / "rl.json").is_file()


def test_eval_command_on_a_run_dir(full_run):
    proc = rftkit("eval", str(full_run / "models" / "rl"), "eval.n_samples=4", "eval.ks=[1,2]")
    assert "pass@2" in proc.stdout and (full_run / "models" / "rl" / "eval_results.json").is_file()


def kill_after_checkpoint(recipe: Path, out: Path, name: str, step: int) -> None:
    """Run `recipe` in a subprocess and SIGKILL it once checkpoint `step` exists (a step inside
    its RL stage); the run must not have finished by then."""
    cmd = [sys.executable, "-m", "rftkit", "run", str(recipe), f"out_dir={out}", "model.threads=1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / name / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline:
        if latest.is_file() and latest.read_text().strip() >= f"step_{step:06d}":
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / name / "eval" / "rl.json").exists(), "run finished before it could be killed"


def test_kill_and_resume_is_exact(full_run, tmp_path):
    kill_after_checkpoint(TINY, tmp_path, "tiny", 10)
    rftkit("run", "--resume", str(tmp_path / "tiny"))
    a = load_file(str(full_run / "models" / "rl" / "model.safetensors"))
    b = load_file(str(tmp_path / "tiny" / "models" / "rl" / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert _records(full_run) == _records(tmp_path / "tiny")


def test_cli_errors_are_one_paragraph(tmp_path):
    cases = [
        (["run", "nope_recipe"], "no recipe 'nope_recipe'"),
        (["run", str(TINY), "optim.lrr=1"], "Did you mean 'lr'"),
        (["run", str(TINY), "data.tasks.0.name=arith"], "unknown task 'arith'"),
        (["run", "--resume", str(tmp_path)], "no config.yaml"),
        (["run", str(TINY), "imports=[missing_file.py]"], "imports: file 'missing_file.py' not found"),
    ]
    broken = tmp_path / "broken.py"
    broken.write_text("import does_not_exist_xyz\n")
    cases.append((["run", str(TINY), f"imports=[{broken}]"], "failed to import: ModuleNotFoundError"))
    for args, message in cases:
        proc = rftkit(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_resume_needs_a_checkpoint(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(TINY.read_text())
    proc = rftkit("run", "--resume", str(run_dir), check=False)
    assert proc.returncode == 2 and "holds no checkpoint" in proc.stderr
