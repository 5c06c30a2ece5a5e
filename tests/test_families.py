"""The family table is the one list of model families, and params.yaml the one home of every param value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from cnn_ocr import export, families
from cnn_ocr.config import ConfigError, Params, load_params
from cnn_ocr.tracking import store

ROOT = Path(__file__).resolve().parents[1]


def _field_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field of a params class, nested blocks included, as key paths."""
    out = []
    for name, field in model.model_fields.items():
        out.append((*prefix, name))
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += _field_paths(field.annotation, (*prefix, name))
    return out


def test_every_param_value_comes_from_params_yaml(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    paths = _field_paths(Params)
    assert len(paths) > 90 and ("models", "improved_cnn", "augment", "scale") in paths
    for path in paths:
        doc = yaml.safe_load(yaml.safe_dump(raw))
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match=f"missing parameter '{'.'.join(path)}'"):
            load_params(tmp_path / "params.yaml")


def test_unknown_keys_are_reported_before_missing_ones(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1\nsede: 2\n")
    missing = sum(f.is_required() for f in Params.model_fields.values()) - 1  # every top-level block but seed
    with pytest.raises(ConfigError, match=rf"invalid parameter 'sede'.*\(and {missing} more\)"):
        load_params(tmp_path / "params.yaml")


def test_params_yaml_has_one_block_per_trainable_family():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert list(raw["models"]) == ["evaluation", *families.FAMILIES]
    assert families.FAMILIES == ("base_cnn", "svm", "improved_cnn")
    params = load_params(ROOT / "params.yaml")
    for name in families.FAMILIES:
        assert isinstance(families.family_params(params, name), families.TABLE[name].params)
        assert families.data_version_of(params, name) == raw["models"][name]["data_version"]


def test_every_trainable_family_has_its_dvc_stage():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in families.FAMILIES:
        stage = stages[f"train_{name}"]
        assert f"--model {name}" in stage["cmd"] and f"models.{name}" in stage["params"]


def test_each_family_builds_a_model_of_its_framework():
    import torch

    params = load_params(ROOT / "params.yaml")
    for name in families.FAMILIES:
        model = families.get(name).build(families.family_params(params, name))
        assert isinstance(model, torch.nn.Module) == families.is_torch(name) == (families.TABLE[name].framework == "torch")
        if not families.is_torch(name):
            assert hasattr(model, "predict_proba")


def test_unknown_family_names_the_choices():
    with pytest.raises(ValueError, match="unknown model family 'cnn'; choose one of: base_cnn, svm, improved_cnn"):
        families.get("cnn")
    with pytest.raises(ValueError, match="not built from params"):
        families.TABLE["ensemble"].build(None)
    assert families.is_torch("ensemble") and "ensemble" not in families.FAMILIES


def test_export_and_tracking_read_the_table():
    assert set(export.CNN_FAMILIES) | set(export.SKLEARN_FAMILIES) == set(families.TABLE)
    assert export.SKLEARN_FAMILIES == ("svm",) and "ensemble" in export.CNN_FAMILIES
    assert store.FAMILY_EXPERIMENTS == {"base_cnn": "baseline-models", "svm": "baseline-models",
                                        "improved_cnn": "improved-cnn"}
