"""Every logging sink round-trips: write records through it, read them back with the tool's own reader."""

import glob
import importlib.util
import json
import struct
import sys

import pytest

from rftkit.errors import ConfigError
from rftkit.report.sinks import build_sinks, mlflow_key

RECORDS = [
    {"step": 1, "stage": "sft", "time": 0.5, "loss/sft": 2.0, "optim/lr": 1e-3},
    {"step": 2, "stage": "sft", "time": 1.0, "loss/sft": 1.5, "optim/lr": 1e-3, "time/update": 0.2},
    {"step": 3, "stage": "rl", "time": 1.7, "reward/mean": 0.25, "policy/clipfrac": 0.1},
    {"step": 3, "stage": "rl", "time": 2.0, "eval/test/pass@1": 0.5, "eval/test/pass@1/src=a": 0.75},
]
CONFIG = {"seed": 3, "model": {"size": "nano"}, "stages": [{"name": "sft", "steps": 2}]}


def _needs(pkg: str):
    return pytest.mark.skipif(importlib.util.find_spec(pkg) is None,
                              reason=f"{pkg} is not installed (pip install rftkit[{pkg}])")


def _write(name: str, run_dir) -> None:
    (sink,) = build_sinks([name], run_dir, CONFIG)
    for r in RECORDS:
        sink.log(r)
    sink.close()


def _expected() -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in RECORDS:
        for k, v in r.items():
            if k not in ("step", "stage"):
                out.setdefault(k, []).append((r["step"], v))
    return out


@_needs("tensorboard")
def test_tensorboard_round_trip(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _write("tensorboard", tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    got = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert set(got) == set(_expected())
    for k, pts in _expected().items():
        assert got[k] == [(s, pytest.approx(v)) for s, v in pts], k


def _wandb_records(path: str):
    """Records of a .wandb file (W&B's LevelDB-style log: 32 KiB blocks, 7-byte record headers)."""
    data = open(path, "rb").read()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk


@_needs("wandb")
def test_wandb_offline_round_trip(tmp_path):
    from wandb.proto import wandb_internal_pb2

    _write("wandb", tmp_path)
    (path,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    rows, config = {}, None
    for raw in _wandb_records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            row = {(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in rec.history.item}
            rows[row["_step"]] = row
        elif rec.WhichOneof("record_type") in ("run", "config"):
            cfg = rec.run.config if rec.WhichOneof("record_type") == "run" else rec.config
            config = {**(config or {}), **{it.key: json.loads(it.value_json) for it in cfg.update}}
    assert config is not None and config["seed"] == 3 and config["model"] == {"size": "nano"}
    for k, pts in _expected().items():
        for step, v in pts:
            if k == "time" and step == 3:
                continue  # two records at step 3: W&B keeps the last time
            assert rows[step][k] == pytest.approx(v), (k, step)
    assert rows[3]["time"] == pytest.approx(2.0)


@_needs("mlflow")
def test_mlflow_file_store_round_trip(tmp_path):
    from mlflow.tracking import MlflowClient

    _write("mlflow", tmp_path)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("rftkit")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["model.size"] == "nano" and run.info.status == "FINISHED"
    for k, pts in _expected().items():
        hist = client.get_metric_history(run.info.run_id, mlflow_key(k))
        assert sorted((m.step, round(m.value, 9)) for m in hist) == sorted(pts), k
    _write("mlflow", tmp_path)  # the same run dir again (a resume) logs into the same MLflow run
    assert len(client.search_runs([exp.experiment_id])) == 1
    assert mlflow_key("eval/test/pass@1/src=a") == "eval/test/pass_at_1.src:a"
    assert mlflow_key("time") == "time/wall" and mlflow_key("eval/ood/maj@4/d3") == "eval/ood/maj_at_4.d3"


def test_unknown_sink_and_missing_package_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="valid: tensorboard, wandb, mlflow"):
        build_sinks(["tensorbord"], tmp_path, {})
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install rftkit\[wandb\]"):
        build_sinks(["wandb"], tmp_path, {})



@_needs("tensorboard")
def test_tensorboard_resume_purges_what_the_interrupted_run_logged_after_the_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (first,) = build_sinks(["tensorboard"], tmp_path, {})
    for step in (1, 2, 3, 4):
        first.log({"step": step, "stage": "rl", "reward/mean": float(step)})
    first.close()
    (resumed,) = build_sinks(["tensorboard"], tmp_path, {}, resume_step=3)  # checkpoint at step 2
    for step in (3, 4, 5):
        resumed.log({"step": step, "stage": "rl", "reward/mean": 10.0 * step})
    resumed.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0),
                                                                        (5, 50.0)]
