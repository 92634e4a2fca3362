"""Starting or joining the Ray cluster that runs the `dist.*` workers.

    ensure_ray(cfg.dist)   # before the first actor or task; idempotent
    ...
    shutdown_ray()         # at the end of the run: stops the cluster only if ensure_ray started it

`dist.address` None starts a local cluster on this machine (os.cpu_count() CPUs, or as many
as the workers ask for when that is more: they then share cores; no dashboard, worker logs
not streamed to the driver); "auto" or "host:port" joins a running one
(`ray start --head` first). Every worker must import rftkit: a local cluster puts the folder
this package is imported from on the workers' PYTHONPATH; on other machines rftkit must be
installed (or found at the same path).

Three mistakes are caught here, each a ConfigError naming the key: Ray not installed, an
address that does not answer (probed first with a short timeout: a TCP connection, then the
cluster id from its GCS; `ray.init` itself retries for minutes), and more workers than the
cluster holds (`ray.cluster_resources()` against what the rollout workers, reward tasks and
learners ask for).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from pathlib import Path

from rftkit.errors import ConfigError

log = logging.getLogger("rftkit.dist")

PROBE_TIMEOUT = 5.0
"""Seconds the address probe waits for the head node's GCS port to accept a connection, and
again for the GCS to answer."""

_started = False  # whether this process started the cluster (shutdown_ray stops only that one)


def import_ray(dist_cfg=None):
    """The ray module, or a ConfigError naming the `dist` keys that need it and how to install it."""
    try:
        import ray
    except ImportError:
        keys = [k for k in ("rollout_workers", "reward_workers", "learners") if getattr(dist_cfg, k, 0)]
        named = ", ".join(f"dist.{k}={getattr(dist_cfg, k)}" for k in keys) or "dist.*"
        raise ConfigError(f"{named} runs workers on Ray, which is not installed: `pip install 'rftkit[dist]'` "
                          f"(or set dist.rollout_workers, dist.reward_workers and dist.learners to 0 to run in "
                          f"one process)") from None
    return ray


def _pythonpath() -> str:
    """PYTHONPATH for the workers: the folder holding the rftkit package first, then the driver's."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


def _resolve(address: str) -> str:
    """host:port of `address`; "auto" is looked up as Ray does (RAY_ADDRESS, then the cluster
    this machine's `ray start` recorded)."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:  # a Ray without this helper: ray.init reports it (no probe)
        return ""
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as e:
        raise ConfigError(f"dist.address=auto: no running Ray cluster was found on this machine ({e}). Start one "
                          f"with `ray start --head` (and `ray start --address=<head>:6379` on the other "
                          f"machines), name it as dist.address=host:port, or leave dist.address unset to "
                          f"start a local cluster") from None


def probe(address: str, timeout: float | None = None) -> None:
    """ConfigError unless a Ray cluster answers at `address` (host:port) within `timeout` seconds
    (default PROBE_TIMEOUT): a TCP connection first, then the cluster id from its GCS (a port
    that accepts connections but is not Ray, e.g. a proxy, fails there)."""
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"dist.address={address!r}: expected 'auto' or 'host:port' (e.g. 10.0.0.1:6379, the "
                          f"address `ray start --head` prints), or leave dist.address unset to start a local cluster")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        problem = _gcs_problem(address, timeout)
    except OSError as e:
        problem = f"{type(e).__name__}: {e}"
    if problem:
        raise ConfigError(f"dist.address={address}: no Ray cluster answers there ({problem}). Check that `ray "
                          f"start --head` runs on that machine and its port is reachable from here, or leave "
                          f"dist.address unset to start a local cluster")


def _gcs_problem(address: str, timeout: float) -> str:
    """Why the GCS at `address` gave no cluster id within `timeout` ("" when it did). On a
    daemon thread: Ray's client retries for minutes, and nothing can interrupt it."""
    try:
        from ray._raylet import GcsClient  # not public API: without it the TCP probe is all
    except ImportError:
        return ""
    out: dict[str, str] = {}

    def ask() -> None:
        try:
            GcsClient(address=address).cluster_id  # noqa: B018 - the call is the check
            out["ok"] = ""
        except Exception as e:  # noqa: BLE001 - reported in the ConfigError
            out["error"] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=ask, name="rftkit-ray-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if "ok" in out:
        return ""
    return out.get("error", f"no answer from its GCS within {timeout:g}s")


def ensure_ray(dist_cfg) -> None:
    """Connect this process to Ray (start a local cluster or join dist.address) unless it is
    already connected, then check that the cluster holds the workers `dist_cfg` asks for."""
    global _started
    ray = import_ray(dist_cfg)
    if not ray.is_initialized():
        if dist_cfg.address is None:
            # A local cluster counts at least the CPUs its workers ask for: on a machine with fewer
            # cores they share them (slower, not stuck), as the tests' 2-learner runs on 2 cores do.
            cpus = max(os.cpu_count() or 1, math.ceil(needs(dist_cfg)["CPU"]))
            if cpus > (os.cpu_count() or 1):
                log.warning("dist: %d workers' CPUs on %d cores: they share cores", cpus, os.cpu_count() or 1)
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
            _started = True
        else:
            target = _resolve(dist_cfg.address)
            if target:
                probe(target)
            try:
                ray.init(address=dist_cfg.address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"dist.address={dist_cfg.address}: joining the Ray cluster failed "
                                  f"({type(e).__name__}: {e}); check the address `ray start --head` printed, "
                                  f"or leave dist.address unset to start a local cluster") from None
    check_capacity(dist_cfg, ray.cluster_resources())


def needs(dist_cfg) -> dict[str, float]:
    """CPUs and GPUs the workers of `dist_cfg` reserve together: rollout actors and learners hold
    theirs for the whole run, and up to `reward_workers` reward tasks run at once."""
    held = dist_cfg.rollout_workers + dist_cfg.learners
    return {"CPU": (held + dist_cfg.reward_workers) * dist_cfg.cpus_per_worker,
            "GPU": held * dist_cfg.gpus_per_worker}


def check_capacity(dist_cfg, resources: dict) -> None:
    """ConfigError when the cluster's total `resources` (ray.cluster_resources()) cannot hold
    every worker at once: Ray would wait for the missing CPUs/GPUs forever."""
    want = needs(dist_cfg)
    counts = (f"dist.rollout_workers={dist_cfg.rollout_workers}, dist.reward_workers={dist_cfg.reward_workers}, "
              f"dist.learners={dist_cfg.learners}")
    for res, key in (("CPU", "cpus_per_worker"), ("GPU", "gpus_per_worker")):
        have = float(resources.get(res, 0.0))
        if want[res] > have + 1e-9:
            raise ConfigError(
                f"{counts} with dist.{key}={getattr(dist_cfg, key):g} ask the Ray cluster for {want[res]:g} "
                f"{res}s, but it has {have:g}: the workers that do not fit would wait forever. Use fewer workers, "
                f"a smaller dist.{key} (fractions share a {res}), or a bigger cluster (dist.address)")


def shutdown_ray() -> None:
    """Stop the local cluster if ensure_ray started it; a joined cluster (or one the caller
    started) is left running."""
    global _started
    if _started:
        import ray

        ray.shutdown()
        _started = False


__all__ = ["ensure_ray", "shutdown_ray", "check_capacity", "needs", "probe", "import_ray"]
