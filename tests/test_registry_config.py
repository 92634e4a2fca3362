"""Registry behaviour and config errors: unknown keys, wrong types, bad names, overrides."""

from pathlib import Path

import pytest

from rftkit.config import load_config
from rftkit.errors import ConfigError
from rftkit.registry import Registry, RegistryError

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


def test_registry_register_get_and_errors():
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    def alpha(x, *, scale: float = 1.0):
        return x * scale

    with pytest.raises(RegistryError, match="already registered"):
        reg.register("alpha")(alpha)
    with pytest.raises(RegistryError, match=r"unknown widget 'alpah'\. Did you mean 'alpha'\? Valid: alpha"):
        reg.get("alpah")
    assert reg.bind("alpha", {"scale": 3.0})(2) == 6.0
    with pytest.raises(RegistryError, match="unknown parameter 'scal'. Did you mean 'scale'"):
        reg.bind("alpha", {"scal": 1}, where="stages[0].thing")
    assert reg.names() == ["alpha"] and "alpha" in reg


def test_recipe_loads_and_overrides_by_index_and_name():
    cfg = load_config(TINY, ["stages.rl.steps=3", "stages.0.batch_size=5", "optim.lr=0.1", "rollout.stop=[';']"])
    assert cfg.stages[1].steps == 3 and cfg.stages[0].batch_size == 5
    assert cfg.optim.lr == 0.1 and cfg.rollout.stop == [";"]


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", r"unknown key 'optim.lrr'. Did you mean 'lr'\?"),
    ("stages.rl.stepz=3", r"unknown key 'stages.rl.stepz'. Did you mean 'steps'\?"),
    ("stages.rl.steps=many", r"'stages.rl.steps': Input should be a valid integer"),
    ("stages.nope.steps=1", r"'stages' has no element 'nope'"),
    ("model=3", r"'model'"),
    ("noequals", r"not of the form key.sub=value"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_missing_and_invalid_recipe_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(lst)


def test_unknown_registered_names_are_caught_before_training():
    from rftkit.train.build import check_names

    for override, message in [
        ("data.tasks.0.name=arithmatic", r"unknown task 'arithmatic'. Did you mean 'arithmetic'"),
        ("stages.rl.objectives.0.name=polcy", r"unknown objective 'polcy'"),
        ("stages.rl.advantage.name=grpoo", r"unknown advantage estimator 'grpoo'"),
        ("stages.base.demos.params.corrupt=0.1", r"stages\.base\.demos 'noisy': unknown parameter 'corrupt'"),
        ("data.tasks.0.params.digits=3", r"data\.tasks\.0 'arithmetic': unknown parameter 'digits'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            check_names(load_config(TINY, [override]))
