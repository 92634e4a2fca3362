"""Every shipped recipe loads, resolves every registered name, and trains for real briefly."""

from pathlib import Path

import pytest

from rftkit.config import validate
from rftkit.recipe_base import load_recipe
from rftkit.train.build import check_names
from rftkit.train.loop import train

RECIPES = sorted((Path(__file__).parents[1] / "rftkit" / "recipes").glob("*.yaml"))
EXAMPLE = Path(__file__).parents[1] / "examples" / "my_task.py"


def shrink(tree: dict, out_dir: Path) -> dict:
    """The same recipe with a nano model, tiny data and two steps per stage."""
    tree = dict(tree)
    tree.update(out_dir=str(out_dir), progress=False)
    tree["model"] = {**tree.get("model", {}), "size": "nano", "threads": 1}
    tree["data"] = {**tree.get("data", {}), "train_size": 64, "test_size": 4, "ood_size": 4}
    tree["eval"] = {**tree.get("eval", {}), "n_samples": 2, "ks": [1, 2], "every": 0}
    tree["rollout"] = {**tree.get("rollout", {}), "group_size": 2}
    tree["stages"] = [{**s, "steps": min(s["steps"], 2), "batch_size": 4} for s in tree["stages"]]
    return tree


def test_there_is_a_default_recipe():
    assert "default" in [p.stem for p in RECIPES]


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs(recipe, tmp_path):
    tree = load_recipe(recipe)  # its `base:` chain merged in
    first_line = recipe.read_text().splitlines()[0]
    assert first_line.startswith("# "), "a recipe starts with a one-line description comment"
    cfg = validate(shrink(tree, tmp_path), str(recipe))
    check_names(cfg)
    if cfg.model.path:  # needs a Hugging Face model folder and data files, not the built-in model
        pytest.skip("a real-workload recipe: it runs on a tiny random Qwen2 in tests/test_real_recipes.py")
    run = train(cfg)
    last = cfg.stages[-1].name
    assert (run.dir / "eval" / f"{last}.json").is_file()
    assert (run.dir / "models" / last / "model.safetensors").is_file()


def test_user_task_file_runs_through_imports(tmp_path):
    tree = load_recipe(RECIPES[[p.stem for p in RECIPES].index("default")])
    tree["imports"] = [str(EXAMPLE)]
    tree["data"] = {"tasks": [{"name": "parity"}]}
    cfg = validate(shrink(tree, tmp_path), "default+parity")
    from rftkit.plugins import import_file

    import_file(str(EXAMPLE))
    check_names(cfg)
    run = train(cfg)
    assert (run.dir / "eval" / f"{cfg.stages[-1].name}.json").is_file()
