"""Recipes compose (`base:`, rftkit/recipe_base.py): the merge rules on hand-written trees, chains
of bases, the errors (unknown base, missing file, not a mapping, a cycle), and a user recipe
outside the package that starts from a shipped one."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftkit.cli import app, recipe_path
from rftkit.config import load_config
from rftkit.errors import ConfigError
from rftkit.recipe_base import RECIPES_DIR, find_recipe, load_recipe, merge, recipe_tree

STAGES = [{"name": "base", "steps": 600, "lr": 0.003},
          {"name": "sft", "steps": 10},
          {"name": "rl", "steps": 40, "objectives": [{"name": "policy", "params": {"loss": "ppo_clip", "agg": "a"}}]}]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mappings_merge_key_by_key_and_the_child_wins():
    parent = {"seed": 0, "model": {"size": "micro", "max_seq_len": 128}, "eval": {"ks": [1, 4]}}
    child = {"model": {"size": "mini"}, "name": "x"}
    assert merge(parent, child) == {"seed": 0, "model": {"size": "mini", "max_seq_len": 128},
                                    "eval": {"ks": [1, 4]}, "name": "x"}
    assert parent["model"] == {"size": "micro", "max_seq_len": 128}  # inputs are not modified


def test_named_lists_merge_by_name_in_the_parents_order_new_names_appended():
    child = [{"name": "extra", "steps": 5},
             {"name": "rl", "lr": 1e-4, "objectives": [{"name": "kl", "weight": 0.01},
                                                       {"name": "policy", "params": {"agg": "b"}}]},
             {"name": "base", "steps": 100}]
    out = merge({"stages": STAGES}, {"stages": child})["stages"]
    assert [s["name"] for s in out] == ["base", "sft", "rl", "extra"]
    assert out[0] == {"name": "base", "steps": 100, "lr": 0.003}
    assert out[2]["lr"] == 1e-4 and out[2]["steps"] == 40
    assert out[2]["objectives"] == [{"name": "policy", "params": {"loss": "ppo_clip", "agg": "b"}},
                                    {"name": "kl", "weight": 0.01}]


def test_drop_removes_and_replace_swaps_an_item_whole_in_place():
    child = [{"name": "sft", "drop": True},
             {"name": "rl", "objectives": [{"name": "policy", "replace": True, "params": {"loss": "pg"}}]},
             {"name": "base", "replace": True, "steps": 1}]
    out = merge(STAGES, child)
    assert out == [{"name": "base", "steps": 1},
                   {"name": "rl", "steps": 40, "objectives": [{"name": "policy", "params": {"loss": "pg"}}]}]


@pytest.mark.parametrize("parent, child", [
    (3, 4),                                                      # scalars
    ([1, 4, 16], [1, 8]),                                        # a list of scalars
    ({"a": 1}, [1]),                                             # another type
    ({"a": 1}, None),                                            # null unsets a section
    (STAGES, []),                                                # an empty list empties
    ([{"name": "a", "x": 1}], [{"name": "t", "label": "e"}, {"name": "t", "label": "h"}]),  # repeated names
    ([{"name": "a"}, {"k": 1}], [{"name": "a", "x": 2}]),      # a parent item without a name
])
def test_other_values_are_replaced_whole(parent, child):
    assert merge({"k": parent}, {"k": child}) == {"k": child}


@pytest.mark.parametrize("child, message", [
    ([{"name": "nope", "drop": True}], r"'stages.nope': 'drop: true' but the base has no item named 'nope' in 'stages' "
                                       r"\(it has: base, sft, rl\)"),
    ([{"name": "nope", "replace": True}], r"'replace: true' but the base has no item named 'nope'"),
    ([{"name": "sft", "drop": True, "steps": 3}],
     r"'stages.sft': an item with 'drop: true' .* no other key \(got drop, steps\)"),
    ([{"name": "sft", "drop": "yes"}], r"'stages.sft': 'drop' and 'replace' take true or false"),
])
def test_marker_misuse_is_an_error_naming_the_key(child, message):
    with pytest.raises(ConfigError, match=message):
        merge({"stages": STAGES}, {"stages": child}, source="my.yaml")


def test_a_chain_of_bases_with_relative_paths(tmp_path):
    write(tmp_path / "common" / "root.yaml", "seed: 1\nmodel: {size: nano}\nstages:\n  - {name: a, steps: 1}\n")
    write(tmp_path / "common" / "mid.yaml", "base: root.yaml\nseed: 2\nstages:\n  - {name: b, steps: 2}\n")
    leaf = write(tmp_path / "runs" / "leaf.yaml", "base: ../common/mid.yaml\nstages:\n  - {name: a, steps: 3}\n")
    assert load_recipe(leaf) == {"seed": 2, "model": {"size": "nano"},
                                 "stages": [{"name": "a", "steps": 3}, {"name": "b", "steps": 2}]}


def test_a_cycle_is_an_error_naming_the_chain(tmp_path):
    a = write(tmp_path / "a.yaml", "base: b.yaml\nseed: 1\n")
    write(tmp_path / "b.yaml", "base: c.yaml\n")
    write(tmp_path / "c.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(a)
    msg = str(e.value)
    assert "'base: a.yaml'" in msg and "the bases form a cycle" in msg and "\n" not in msg
    assert msg.index("a.yaml ->") < msg.index("b.yaml ->") < msg.index("c.yaml ->")
    with pytest.raises(ConfigError, match="cycle"):
        load_recipe(write(tmp_path / "self.yaml", "base: self.yaml\n"))


def test_unknown_base_names_the_file_the_key_and_the_shipped_recipes(tmp_path):
    child = write(tmp_path / "child.yaml", "base: defualt\nseed: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    msg = str(e.value)
    assert msg.startswith(f"{child}: 'base: defualt': no recipe 'defualt': not a file, and not a shipped recipe (")
    assert "default" in msg and "\n" not in msg


@pytest.mark.parametrize("parent_text, message", [
    (None, r"'base: parent.yaml': recipe file '.*parent.yaml' does not exist"),
    ("- a\n- b\n", r"parent.yaml \(the base of .*child.yaml\): expected a mapping"),
    ("stages: [unclosed", r"parent.yaml \(the base of .*child.yaml\): not valid YAML"),
])
def test_bad_base_files_are_errors_naming_both_files(tmp_path, parent_text, message):
    if parent_text is not None:
        write(tmp_path / "parent.yaml", parent_text)
    child = write(tmp_path / "child.yaml", "base: parent.yaml\n")
    with pytest.raises(ConfigError, match=message):
        load_recipe(child)
    with pytest.raises(ConfigError, match=r"child.yaml: 'base' should be a shipped recipe name"):
        load_recipe(write(tmp_path / "child.yaml", "base: [default]\n"))


def test_base_names_resolve_as_rftkit_run_resolves_them(tmp_path):
    assert recipe_path("grpo") == find_recipe("grpo", tmp_path) == RECIPES_DIR / "grpo.yaml"
    local = write(tmp_path / "mine.yaml", "seed: 5\n")
    assert find_recipe("mine.yaml", tmp_path) == local  # a path is relative to the child's folder
    assert recipe_tree("grpo") == load_recipe(RECIPES_DIR / "grpo.yaml")
    assert "base" not in recipe_tree("grpo")


def test_user_recipe_outside_the_package_starts_from_default(tmp_path):
    user = write(tmp_path / "elsewhere" / "my_recipe.yaml",
                 "# my variant\nbase: default\nname: mine\nstages:\n  - {name: rl, steps: 7}\n")
    cfg = load_config(user, ["stages.sft.lr=0.002"])
    default = load_config(RECIPES_DIR / "default.yaml")
    assert cfg.name == "mine" and cfg.stages[2].steps == 7 and cfg.stages[1].lr == 0.002
    mine = cfg.model_dump()
    mine["name"], mine["stages"][2]["steps"], mine["stages"][1]["lr"] = "default", 40, 0.0001
    assert mine == default.model_dump()  # everything else is the default's


def test_rftkit_run_reports_a_bad_base_in_one_paragraph(tmp_path):
    user = write(tmp_path / "my.yaml", "base: nope\n")
    r = CliRunner().invoke(app, ["run", str(user), f"out_dir={tmp_path}"])
    assert r.exit_code == 2 and "'base: nope': no recipe 'nope'" in r.output and "Traceback" not in r.output
