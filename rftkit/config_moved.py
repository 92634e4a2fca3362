"""Keys that moved: the flat `stages.<name>.rl.*` method flags of rftkit before the rollout half
became registered parts, and their spelling under `stages.<name>.rollout`. A recipe that still
uses them gets an error that shows the new lines; `rollout_of_old_rl` is also how the shipped
recipes were rewritten."""

from __future__ import annotations

from typing import Any

import yaml

OLD_RL_KEYS = ("zero_variance", "max_refill_rounds", "overlong_cache", "mask_truncated", "kl_reward_coef",
               "kl_reward_estimator", "kl_target", "kl_horizon", "offpolicy_per_group", "prefix_rows",
               "prefix_ratio", "hint_levels")


def _resample(rl: dict) -> list[dict]:
    out = []
    if rl.get("hint_levels"):
        out.append({"name": "ghpo_hints", "params": {"levels": list(rl["hint_levels"])}})
    if rl.get("zero_variance", "keep") != "keep":
        params: dict[str, Any] = {"mode": rl["zero_variance"]}
        if rl["zero_variance"] == "refill":
            params["max_rounds"] = rl.get("max_refill_rounds", 4)
        out.append({"name": "dynamic_sampling", "params": params})
    return out


def _rewards(rl: dict) -> list[dict]:
    out = []
    if rl.get("overlong_cache"):
        out.append({"name": "dapo_overlong", "params": {"cache": rl["overlong_cache"]}})
    if rl.get("mask_truncated"):
        out.append({"name": "mask_truncated"})
    if rl.get("kl_reward_coef"):
        params = {"coef": rl["kl_reward_coef"], "estimator": rl.get("kl_reward_estimator", "k1")}
        if rl.get("kl_target") is not None:
            params.update(target=rl["kl_target"], horizon=rl.get("kl_horizon", 10000))
        out.append({"name": "kl_penalty", "params": params})
    return out


def rollout_of_old_rl(rl: dict) -> dict:
    """The `rollout:` section equivalent to the old flat rl flags in `rl` (the others ignored)."""
    out: dict[str, Any] = {}
    if rl.get("offpolicy_per_group"):
        out["groups"] = {"name": "demo_rows", "params": {"rows": rl["offpolicy_per_group"]}}
    elif rl.get("prefix_rows"):
        out["groups"] = {"name": "prefix_rft", "params": {"rows": rl["prefix_rows"],
                                                          "ratio": rl.get("prefix_ratio", 0.5)}}
    if resample := _resample(rl):
        out["resample"] = resample
    if rewards := _rewards(rl):
        out["rewards"] = rewards
    return out


def moved_message(rl: dict) -> str | None:
    """None, or what to write instead of the old keys found in `rl`."""
    old = [k for k in OLD_RL_KEYS if k in rl]
    if not old:
        return None
    new = yaml.safe_dump({"rollout": rollout_of_old_rl(rl)}, sort_keys=False, default_flow_style=None).strip()
    return (f"{', '.join(old)} moved out of `rl:` into the stage's `rollout:` parts; write instead:\n"
            f"{new}\n(docs/architecture.md, 'The rollout half')")
