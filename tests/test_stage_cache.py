"""The stage cache: a stage trained before with the same config and code is copied, not trained
again, and the run that reuses it ends bit-for-bit where retraining it ends."""

import copy
import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from rftkit.config import validate
from rftkit.train import stage_cache
from rftkit.train.loop import train

TINY = yaml.safe_load((Path(__file__).parent / "fixtures" / "tiny.yaml").read_text())


def _tree(out: Path, name: str, rl_lr: float = 0.003, cache: bool = True, base_steps: int = 4) -> dict:
    t = copy.deepcopy(TINY)
    t.update(out_dir=str(out), name=name, stage_cache=cache)
    t["model"] = {**t["model"], "threads": 1}
    t["stages"][0]["steps"] = base_steps
    t["stages"][1].update(steps=3, lr=rl_lr)
    return t


def _run(tree: dict):
    torch.set_num_threads(1)
    return train(validate(tree, tree["name"]))


def _records(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time" and not k.startswith(("time/", "perf/"))} for r in rows]


def _weights(run_dir: Path, stage: str) -> dict:
    return load_file(str(run_dir / "models" / stage / "model.safetensors"))


def test_a_reused_stage_ends_where_retraining_ends(tmp_path, monkeypatch):
    first = _run(_tree(tmp_path, "first"))
    entries = list((tmp_path / ".stage_cache").iterdir())
    assert len(entries) == 2  # base and rl

    trained = []  # which stages the second run really trains
    import rftkit.train.loop as loop

    real = loop.train_stage
    monkeypatch.setattr(loop, "train_stage", lambda run: trained.append(run.state.stage_idx) or real(run))
    reused = _run(_tree(tmp_path, "reused", rl_lr=0.001))  # same base stage, another rl stage
    assert trained == [1], "the base stage must come from the cache, the changed rl stage must train"
    monkeypatch.setattr(loop, "train_stage", real)
    fresh = _run(_tree(tmp_path / "nocache", "fresh", rl_lr=0.001, cache=False))
    assert not (tmp_path / "nocache" / ".stage_cache").exists()

    for stage in ("base", "rl"):
        a, b = _weights(reused.dir, stage), _weights(fresh.dir, stage)
        assert all(torch.equal(a[k], b[k]) for k in a), stage
    assert _records(reused.dir) == _records(fresh.dir)
    base_eval = json.loads((first.dir / "eval" / "base.json").read_text())
    assert json.loads((reused.dir / "eval" / "base.json").read_text()) == base_eval
    assert (reused.dir / "eval" / "base_test.jsonl").is_file() and (reused.dir / "checkpoints" / "latest").is_file()


def test_anything_the_stage_depends_on_changes_the_key(tmp_path):
    cfg = validate(_tree(tmp_path, "a"), "a")
    key = stage_cache.stage_key(cfg, 0)
    assert key == stage_cache.stage_key(validate(_tree(tmp_path, "b", rl_lr=1e-4), "b"), 0)  # a later stage: same
    assert key != stage_cache.stage_key(validate(_tree(tmp_path, "c", base_steps=5), "c"), 0)
    assert stage_cache.stage_key(cfg, 1) != stage_cache.stage_key(validate(_tree(tmp_path, "b", rl_lr=1e-4), "b"), 1)
    other_seed = _tree(tmp_path, "d")
    other_seed["seed"] = 4
    assert key != stage_cache.stage_key(validate(other_seed, "d"), 0)
    assert stage_cache.stage_key(validate(_tree(tmp_path, "e", cache=False), "e"), 0) is None
    with_file = _tree(tmp_path, "f")
    with_file["imports"] = [str(tmp_path / "user.py")]
    (tmp_path / "user.py").write_text("")
    assert stage_cache.stage_key(validate(with_file, "f"), 0) is None


def test_an_entry_without_its_state_is_a_miss(tmp_path, monkeypatch):
    """Entries are filled under a temp name and renamed when complete; one without state.json
    (a crash, a hand edit) is not read: the stage trains again and the entry is rewritten."""
    _run(_tree(tmp_path, "first", base_steps=2))
    entry = next(p for p in (tmp_path / ".stage_cache").iterdir()
                 if json.loads((p / "state.json").read_text())["stage"] == "base")
    (entry / "state.json").unlink()
    import rftkit.train.loop as loop

    trained, real = [], loop.train_stage
    monkeypatch.setattr(loop, "train_stage", lambda run: trained.append(run.state.stage_idx) or real(run))
    _run(_tree(tmp_path, "again", base_steps=2))
    assert trained == [0]  # base retrained; rl (same config, same base) reused
    assert (entry / "state.json").is_file() and not list((tmp_path / ".stage_cache").glob("*.tmp"))
