"""Named params profiles (`profiles:` in params.yaml, chosen with `--set profile=<name>`)."""

from __future__ import annotations

import pytest

from cnn_ocr.config import ConfigError, load_params


def test_no_profile_by_default_keeps_the_family_defaults():
    p = load_params()
    assert p.profile is None and "fast" in p.profiles
    assert p.models.improved_cnn.data_version == "v3.0"


def test_every_profile_loads_and_changes_what_it_names():
    base = load_params()
    for name, values in base.profiles.items():
        p = load_params(overrides=[f"profile={name}"])
        dumped = p.model_dump(mode="json")
        for dotted, value in values.items():
            node = dumped
            for part in dotted.split("."):
                node = node[part]
            if isinstance(value, dict) and isinstance(node, dict):  # a block given in part: the keys it names
                node = {k: node.get(k) for k in value}
            assert node == value, (name, dotted)


def test_explicit_overrides_win_over_the_profile():
    p = load_params(overrides=["profile=fast", "models.improved_cnn.epochs=5"])
    assert p.models.improved_cnn.epochs == 5 and p.models.improved_cnn.data_version == "v2.0"
    assert load_params(overrides=["models.improved_cnn.epochs=5", "profile=fast"]).models.improved_cnn.epochs == 5


def test_unknown_profile_and_bad_profile_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown profile 'turbo'; known profiles: fast"):
        load_params(overrides=["profile=turbo"])
    with pytest.raises(ConfigError, match="unknown parameter"):
        load_params(overrides=["profiles.fast={models.improved_cnn.epochz: 3}", "profile=fast"])
