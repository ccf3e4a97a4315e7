"""The experiment contract: strict data files with a quick profile, the registry, statistics."""

import pytest

from workloads import registry
from workloads.contract import (ExperimentError, Field, experiment_path, load_config, merge, spread)

SCHEMA = {
    "networks": Field(list, item_schema={"name": Field(str), "units": Field(list)}),
    "seed": Field(int, required=False),
    "scheme": Field(str, required=False, choices=("cubic", "bbr")),
    "link": Field(dict, required=False, table_schema={"rate_mbit": Field(float, minimum=0.1),
                                                      "delay_ms": Field(float)}),
}
VALID = '''description = "d"
repetitions = 3
[[networks]]
name = "a"
units = [1, 2]
[link]
rate_mbit = 50.0
delay_ms = 10.0
[quick]
repetitions = 1
'''


def write(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_valid_file_loads_in_both_profiles(tmp_path):
    path = write(tmp_path, VALID)
    full = load_config(path, SCHEMA)
    assert full["repetitions"] == 3 and full["networks"][0]["units"] == [1, 2] and "quick" not in full
    assert load_config(path, SCHEMA, "quick")["repetitions"] == 1


def test_quick_merges_sub_tables_key_by_key(tmp_path):
    path = write(tmp_path, VALID + "[quick.link]\nrate_mbit = 10.0\n")
    assert load_config(path, SCHEMA, "quick")["link"] == {"rate_mbit": 10.0, "delay_ms": 10.0}
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_typo_in_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ExperimentError, match="unknown key 'repetitons'"):
        load_config(write(tmp_path, VALID.replace("repetitions = 3", "repetitons = 3")), SCHEMA)


def test_typo_in_the_quick_profile_or_a_sub_table_names_where(tmp_path):
    with pytest.raises(ExperimentError, match=r"\[quick\]: unknown key 'repetition'"):
        load_config(write(tmp_path, VALID.replace("repetitions = 1", "repetition = 1")), SCHEMA)
    with pytest.raises(ExperimentError, match=r"\[link\]: unknown key 'rate'"):
        load_config(write(tmp_path, VALID.replace("rate_mbit = 50.0", "rate = 50.0")), SCHEMA)
    with pytest.raises(ExperimentError, match=r"networks\[0\].*unknown key 'unit'"):
        load_config(write(tmp_path, VALID.replace("units = [1, 2]", "unit = [1]")), SCHEMA)


def test_wrong_type_choice_minimum_and_missing_key(tmp_path):
    with pytest.raises(ExperimentError, match="'repetitions' must be int"):
        load_config(write(tmp_path, VALID.replace("repetitions = 3", 'repetitions = "3"')), SCHEMA)
    with pytest.raises(ExperimentError, match="boolean"):
        load_config(write(tmp_path, VALID.replace("repetitions = 3", "repetitions = true")), SCHEMA)
    with pytest.raises(ExperimentError, match="'repetitions' must be >= 1"):
        load_config(write(tmp_path, VALID.replace("repetitions = 3", "repetitions = 0")), SCHEMA)
    with pytest.raises(ExperimentError, match="'reno' is not one of cubic, bbr"):
        load_config(write(tmp_path, 'scheme = "reno"\n' + VALID), SCHEMA)
    with pytest.raises(ExperimentError, match="missing key 'quick'"):
        load_config(write(tmp_path, VALID.split("[quick]")[0]), SCHEMA)


def test_overrides_are_checked_like_the_file(tmp_path):
    path = write(tmp_path, VALID)
    assert load_config(path, SCHEMA, overrides={"seed": 7})["seed"] == 7
    with pytest.raises(ExperimentError, match="overrides: unknown key 'sed'"):
        load_config(path, SCHEMA, overrides={"sed": 7})


def test_malformed_toml_unknown_experiment_and_profile(tmp_path):
    with pytest.raises(ExperimentError, match="not valid TOML"):
        load_config(write(tmp_path, "description = \n"), SCHEMA)
    with pytest.raises(ExperimentError, match="unknown experiment 'nope'.*engine"):
        experiment_path("nope")
    with pytest.raises(ExperimentError, match="unknown profile 'fast'"):
        load_config(write(tmp_path, VALID), SCHEMA, "fast")


def test_spread_gives_median_and_range_and_skips_missing():
    assert spread([3.0, 1.0, 2.0, None]) == {"n": 3, "median": 2.0, "min": 1.0, "max": 3.0, "q1": 1.5, "q3": 2.5}
    assert spread([None])["median"] is None
    assert spread([5])["q1"] == 5.0


@pytest.mark.parametrize("name", registry.names())
def test_every_data_file_is_valid_for_its_module_in_both_profiles(name):
    experiment = registry.load(name)
    assert experiment.name == name and experiment.title
    for profile in ("full", "quick"):
        config = load_config(experiment_path(name), experiment.schema, profile)
        assert config["repetitions"] >= 1
        assert experiment.jobs(config), f"{name} ({profile}) has no jobs"
        assert registry.description(name)


def test_full_profiles_measure_with_at_least_three_repetitions():
    checks_only = {"smoke", "stress", "fuzz"}   # checks, not measurements: they pass or fail
    for name in set(registry.names()) - checks_only:
        config = load_config(experiment_path(name), registry.load(name).schema)
        assert config["repetitions"] >= 3, name


def test_a_data_file_without_a_module_is_named(tmp_path, monkeypatch):
    import workloads.contract as contract

    (tmp_path / "orphan.toml").write_text(VALID)
    monkeypatch.setattr(contract, "EXPERIMENTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "EXPERIMENTS_DIR", tmp_path)
    with pytest.raises(ExperimentError, match="no module workloads.orphan"):
        registry.load("orphan")
