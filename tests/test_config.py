"""params.yaml loading: defaults from the seed, overrides, and clear errors for bad keys or values."""

from __future__ import annotations

import pytest

from cnn_ocr.config import ConfigError, flatten, load_params


def test_project_params_load(project_params):
    assert project_params.data.validation_size == 5000
    flat = flatten(project_params)
    assert flat["data.augment.rotation_deg"] == project_params.data.augment.rotation_deg


def test_override_changes_value():
    p = load_params("params.yaml", ["data.augment.copies=2", "seed=7"])
    assert p.data.augment.copies == 2 and p.seed == 7


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.no_such_key=1", "unknown parameter 'data.no_such_key'"),
        ("data.validation_size=-5", "data.validation_size"),
        ("data.augment.copies=lots", "data.augment.copies"),
        ("seed", "must look like section.key=value"),
    ],
)
def test_bad_override_is_rejected_with_clear_message(override, needle):
    with pytest.raises(ConfigError) as err:
        load_params("params.yaml", [override])
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_in_file_is_an_error(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nsede: 2\n")
    with pytest.raises(ConfigError, match="sede"):
        load_params(bad)
