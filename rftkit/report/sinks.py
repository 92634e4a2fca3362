"""Optional metric sinks: TensorBoard, Weights & Biases (offline), MLflow (local file store).

metrics.jsonl stays the source of truth (report/log.py); a sink receives the same records
(`{"step", "stage", "time", <metric>: value, ...}`) through the `MetricLogger` protocol and
mirrors the numeric values, keyed by step. Each writes inside the run dir and needs no
network:

    tensorboard   run_dir/tensorboard/   event files (torch.utils.tensorboard; `tensorboard` package)
    wandb         run_dir/wandb/         an offline run (mode="offline"); `wandb sync` uploads it later
    mlflow        run_dir/mlruns/        MLflow's local file store; experiment "rftkit", one run per
                                         run dir (found again by its tag on resume)

Each is an optional dependency: `pip install rftkit[tensorboard]` (or `[wandb]`, `[mlflow]`,
`[sinks]` for all three). `build_sinks(names, run_dir, config)` builds the chosen ones and
fails with that hint when a package is missing.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from rftkit.errors import ConfigError
from rftkit.report.log import MetricLogger

SINKS: dict[str, Callable[..., MetricLogger]] = {}


def _register(name: str):
    def deco(cls):
        SINKS[name] = cls
        return cls

    return deco


def numeric(record: dict) -> dict[str, float]:
    """The record's metrics as floats: everything but step and stage that is a number."""
    return {k: float(v) for k, v in record.items()
            if k not in ("step", "stage") and isinstance(v, (int, float))}


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"the '{extra}' logging sink needs the {extra} package ({e}); "
                          f"install it with: pip install rftkit[{extra}]") from None


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys -> string values (for MLflow params)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: str(tree)}


@_register("tensorboard")
class TensorBoardSink:
    """One scalar per metric (tag = the metric key, global step = record step), in run_dir/tensorboard.

    resume_step: events at or after this step, left by an interrupted run, are purged.
    """

    def __init__(self, run_dir: Path, config: dict, resume_step: int | None = None) -> None:
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=resume_step)
        if config:
            import yaml

            self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        for k, v in numeric(record).items():
            self.writer.add_scalar(k, v, global_step=step)

    def close(self) -> None:
        self.writer.close()


@_register("wandb")
class WandbSink:
    """An offline W&B run in run_dir/wandb (no network, no login); the config is the run config."""

    def __init__(self, run_dir: Path, config: dict, resume_step: int | None = None) -> None:
        wandb = _require("wandb", "wandb")
        self.dir = Path(run_dir)
        settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False,
                                  disable_job_creation=True, x_disable_stats=True)
        self.run = wandb.init(mode="offline", dir=str(self.dir), project="rftkit", name=self.dir.name,
                              config=config, settings=settings, reinit="create_new")

    def log(self, record: dict) -> None:
        self.run.log(numeric(record), step=int(record.get("step", 0)))

    def close(self) -> None:
        import wandb

        self.run.finish()
        wandb.teardown()  # stops W&B's service process, which flushes the run file first


def mlflow_key(key: str) -> str:
    """A metric key MLflow accepts: eval/test/pass@4/src=a -> eval/test/pass_at_4.src:a.

    MLflow allows only alphanumerics, _ - . space / and :, and its file store keeps each
    metric in a file at the key's path, so no key may be the folder of another: a breakdown
    suffix (/d<k>, /src=<label>) joins with ".", and the record's wall time `time` (a
    sibling of time/rollout, time/update...) becomes `time/wall`.
    """
    if key == "time":
        return "time/wall"
    key = re.sub(r"/(src=[^/]*|d\d+)$", r".\1", key)
    return re.sub(r"[^\w\-. /:]", "_", key.replace("@", "_at_").replace("=", ":"))


@_register("mlflow")
class MlflowSink:
    """MLflow's local file store in run_dir/mlruns; experiment "rftkit", one run per run dir.

    Keys are renamed by `mlflow_key`; non-finite values are skipped (MLflow rejects them).
    The file store is in maintenance mode in MLflow 3; this sink opts in to it for its own
    process (MLFLOW_ALLOW_FILE_STORE=true), which needs no database packages.
    """

    def __init__(self, run_dir: Path, config: dict, resume_step: int | None = None) -> None:
        _require("mlflow", "mlflow")
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.dir = Path(run_dir).resolve()
        self.client = MlflowClient(tracking_uri=(self.dir / "mlruns").as_uri())
        exp = self.client.get_experiment_by_name("rftkit")
        exp_id = exp.experiment_id if exp else self.client.create_experiment("rftkit")
        found = self.client.search_runs([exp_id], filter_string=f"tags.`rftkit.run_dir` = '{self.dir}'")
        if found:
            self.run_id = found[0].info.run_id
        else:
            self.run_id = self.client.create_run(exp_id, run_name=self.dir.name,
                                                 tags={"rftkit.run_dir": str(self.dir)}).info.run_id
            params = [Param(k[:250], v[:6000]) for k, v in flatten(config).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric

        step, now = int(record.get("step", 0)), int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), v, now, step) for k, v in numeric(record).items() if math.isfinite(v)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def build_sinks(names: list[str], run_dir: Path, config: dict, resume_step: int | None = None) -> list[MetricLogger]:
    """The sinks named in `names` (tensorboard, wandb, mlflow), each writing inside `run_dir`.

    config: the resolved config as a plain dict (stored as hyper-parameters). resume_step:
    on resume, the first step the resumed run logs again (global_step + 1 of the checkpoint);
    TensorBoard drops the events an interrupted run left at or after it.
    """
    unknown = [n for n in names if n not in SINKS]
    if unknown:
        raise ConfigError(f"unknown logging sink(s) {unknown}; valid: {', '.join(SINKS)}")
    return [SINKS[n](Path(run_dir), config, resume_step=resume_step) for n in dict.fromkeys(names)]


class FanOut:
    """Several MetricLoggers as one (e.g. the JSONL logger and the sinks)."""

    def __init__(self, loggers: list[MetricLogger]) -> None:
        self.loggers = list(loggers)

    def log(self, record: dict) -> None:
        for lg in self.loggers:
            lg.log(record)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
