import pytest

from workloads.experiment import ExperimentError, Field, experiment_path, load_experiment

SCHEMA = {
    "description": Field(str),
    "repetitions": Field(int),
    "networks": Field(list, item_schema={"name": Field(str), "units": Field(list)}),
    "seed": Field(int, required=False),
}


def write(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_valid_file_loads(tmp_path):
    path = write(tmp_path, 'description = "d"\nrepetitions = 3\n[[networks]]\nname = "a"\nunits = [1, 2]\n')
    data = load_experiment(path, SCHEMA)
    assert data["networks"][0]["units"] == [1, 2]


def test_typo_in_key_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, 'description = "d"\nrepetitons = 3\n')
    with pytest.raises(ExperimentError, match="unknown key 'repetitons'"):
        load_experiment(path, SCHEMA)


def test_typo_inside_a_table_names_its_position(tmp_path):
    path = write(tmp_path, 'description = "d"\nrepetitions = 3\n[[networks]]\nname = "a"\nunit = [1]\n')
    with pytest.raises(ExperimentError, match=r"networks\[0\].*unknown key 'unit'"):
        load_experiment(path, SCHEMA)


def test_wrong_type_and_missing_key(tmp_path):
    with pytest.raises(ExperimentError, match="'repetitions' must be int"):
        load_experiment(write(tmp_path, 'description = "d"\nrepetitions = "3"\nnetworks = []\n'), SCHEMA)
    with pytest.raises(ExperimentError, match="missing key 'networks'"):
        load_experiment(write(tmp_path, 'description = "d"\nrepetitions = 3\n'), SCHEMA)
    with pytest.raises(ExperimentError, match="boolean"):
        load_experiment(write(tmp_path, 'description = "d"\nrepetitions = true\nnetworks = []\n'), SCHEMA)


def test_malformed_toml_and_unknown_experiment(tmp_path):
    with pytest.raises(ExperimentError, match="not valid TOML"):
        load_experiment(write(tmp_path, "description = \n"), SCHEMA)
    with pytest.raises(ExperimentError, match="unknown experiment 'nope'.*engine"):
        experiment_path("nope")
