"""Model families: construction, the calibrated SVM, batch augmentation, and the behaviour of a trained CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnn_ocr.calibration import fit_temperature, softmax
from cnn_ocr.config import ConfigError, load_params
from cnn_ocr.evaluate import class_scores, confusion_matrix, per_digit_metrics
from cnn_ocr.fit import torch_loop
from cnn_ocr.models import FAMILIES, build, is_torch
from cnn_ocr.preprocess import to_model_input


@pytest.fixture(scope="module")
def params():
    return load_params("params.yaml")


@pytest.mark.parametrize("family", ["base_cnn", "improved_cnn"])
def test_cnn_maps_normalized_batch_to_logits(params, family):
    model = build(family, getattr(params.models, family)).eval()
    x = torch.from_numpy(to_model_input(np.zeros((3, 28, 28), np.uint8)))
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (3, 10) and out.dtype == torch.float32
    assert is_torch(family)


def test_families_and_unknown_family(params):
    assert set(FAMILIES) == {"base_cnn", "svm", "improved_cnn"}
    assert not is_torch("svm")
    with pytest.raises(ValueError, match="unknown model family 'resnet'"):
        build("resnet", params.models.base_cnn)


def test_improved_cnn_follows_the_seed_layout(params):
    model = build("improved_cnn", params.models.improved_cnn)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    dense = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert len(norms) == 4
    assert [d.out_features for d in dense] == [256, 128, 10]
    padded = build("improved_cnn", params.models.improved_cnn.model_copy(update={"padding": 1}))
    assert padded(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "override", ["models.improved_cnn.conv_filters=[32, 32, 64]", "models.svm.scaling=robust",
                 "models.base_cnn.data_version=latest", "models.improved_cnn.patience=0"]
)
def test_bad_model_params_are_rejected(override):
    with pytest.raises(ConfigError):
        load_params("params.yaml", [override])


def test_calibrated_svm_gives_probabilities(params, tiny_splits):
    model = build("svm", params.models.svm)
    flat = to_model_input(tiny_splits.train_x).reshape(len(tiny_splits.train_x), -1)
    model.fit(flat, tiny_splits.train_y)
    temperature = model.calibrate(to_model_input(tiny_splits.val_x).reshape(200, -1), tiny_splits.val_y)
    assert 0.01 < temperature < 100
    x = to_model_input(tiny_splits.test_x[:50]).reshape(50, -1)
    proba = model.predict_proba(x)
    assert proba.shape == (50, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (model.predict(x) == proba.argmax(axis=1)).all()
    assert model.pipeline[-1].probability is not True  # never SVC's internal 5-fold calibration


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(4000, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(logits, 2.0)])
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)


def test_batch_augmentation_keeps_background_and_shape():
    gen = torch.Generator().manual_seed(0)
    images = np.zeros((8, 28, 28), np.uint8)
    images[:, 10:18, 12:16] = 255
    x = torch.from_numpy(to_model_input(images))
    aug_params = load_params("params.yaml").models.improved_cnn.augment
    out = torch_loop.augment_batch(x, aug_params, gen)
    assert out.shape == x.shape
    assert torch.allclose(out[:, :, :3, :3], x[:, :, :3, :3], atol=1e-5)  # corners stay black
    assert not torch.allclose(out, x)
    still = aug_params.model_copy(update={"rotation_deg": 0.0, "shift_px": 0.0, "scale": 0.0})
    assert torch.allclose(torch_loop.augment_batch(x, still, gen), x, atol=1e-4)
    elastic = still.model_copy(update={"elastic_alpha": 34.0, "elastic_sigma": 4.0})
    bent = torch_loop.augment_batch(x, elastic, gen)
    assert torch.allclose(bent[:, :, :3, :3], x[:, :, :3, :3], atol=1e-5)
    assert not torch.allclose(bent, x, atol=0.05)
    assert not torch.allclose(bent[0], bent[1], atol=0.05)  # a fresh field per image


def test_the_elastic_field_is_smoothed_as_scipy_smooths_the_stored_copies():
    from scipy import ndimage

    field = torch.rand(3, 2, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    ours = torch_loop._gaussian_smoothed(field, 4.0).numpy()
    theirs = np.stack([[ndimage.gaussian_filter(c, 4.0, mode="constant", truncate=3.0) for c in img]
                       for img in field.numpy()])
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


# ---- behaviour of a small CNN trained once in this test session --------------------------------------------


@pytest.fixture(scope="module")
def small_cnn(mnist_splits, params):
    """A base CNN trained like the production model (batch augmentation), 2 epochs on 8000 real images."""
    augment = params.models.base_cnn.augment.model_copy(update={"enabled": True, "shift_px": 3.0})
    fp = params.models.base_cnn.model_copy(update={"epochs": 2, "batch_size": 64, "augment": augment})
    x = torch.from_numpy(to_model_input(mnist_splits.train_x[:8000]))
    y = torch.from_numpy(mnist_splits.train_y[:8000])
    vx = torch.from_numpy(to_model_input(mnist_splits.val_x[:1000]))
    vy = torch.from_numpy(mnist_splits.val_y[:1000])
    with torch_loop.seeded(0, "cpu"):
        model = build("base_cnn", fp)
        torch_loop.fit(model, (x, y), (vx, vy), fp, seed=0)
    return model.eval()


@pytest.mark.model
def test_training_leaves_the_default_layout_and_global_settings_behind(small_cnn):
    # Training holds the weights channels-last and relaxes deterministic mode's NaN fill; neither may leak out.
    conv = [m for m in small_cnn.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # the first has one input channel
    assert conv.weight.is_contiguous() and not conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory


@pytest.mark.model
@pytest.mark.parametrize("precision", ["bf16", "bf16_features"])
def test_bf16_training_runs_in_bf16_keeps_fp32_weights_and_repeats(mnist_splits, params, precision):
    fp = params.models.base_cnn.model_copy(update={"epochs": 1, "batch_size": 64, "precision": precision})
    data = (torch.from_numpy(to_model_input(mnist_splits.train_x[:2000])), torch.from_numpy(mnist_splits.train_y[:2000]))
    val = (torch.from_numpy(to_model_input(mnist_splits.val_x[:500])), torch.from_numpy(mnist_splits.val_y[:500]))

    def trained(p, model=None):
        with torch_loop.seeded(0, "cpu"):
            model = model or build("base_cnn", p)
            result = torch_loop.fit(model, data, val, p, seed=0)
        return model.state_dict(), result.history[-1]["val_accuracy"]

    (first, acc), (again, _), (full, acc_fp32) = trained(fp), trained(fp), trained(fp.model_copy(update={"precision": "fp32"}))
    assert all(v.dtype in (torch.float32, torch.int64) for v in first.values())
    assert all(torch.equal(first[k], again[k]) for k in first)  # the same seed gives the same weights
    assert not all(torch.equal(first[k], full[k]) for k in first)  # the forward pass did run in bf16
    assert acc > 0.85 and abs(acc - acc_fp32) < 0.03, (acc, acc_fp32)
    if precision == "bf16_features":  # it needs the features / classifier split of the project's CNNs
        with pytest.raises(ValueError, match="bf16_features needs a model with `features` and `classifier`"):
            trained(fp, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))


class _SureOf(torch.nn.Module):
    """A stand-in teacher: logits sure of one digit whatever the input."""

    def __init__(self, digit: int) -> None:
        super().__init__()
        self.digit = digit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.full((len(x),), self.digit), 10).float() * 6.0


def test_distillation_loss_is_kl_to_the_members_averaged_probabilities():
    from cnn_ocr.models.ensemble import Ensemble

    x, student = torch.zeros(4, 1, 28, 28), torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    teacher, t = Ensemble([_SureOf(3), _SureOf(7)]), 2.0
    target = (torch.softmax(_SureOf(3)(x) / t, 1) + torch.softmax(_SureOf(7)(x) / t, 1)) / 2  # probabilities averaged
    expected = (target * (target.log() - torch.log_softmax(student / t, 1))).sum(1).mean() * t**2
    assert torch.allclose(torch_loop.distillation_loss(student, teacher, x, t), expected, atol=1e-6)
    alone = Ensemble([_SureOf(3)])
    assert torch_loop.distillation_loss(_SureOf(3)(x), alone, x, 4.0).abs() < 1e-5  # the teacher itself: no loss
    student.requires_grad_(True)
    torch_loop.distillation_loss(student, alone, x, 4.0).backward()
    assert (student.grad[:, 3] < 0).all()  # a descent step raises the teacher's digit


@pytest.mark.model
def test_distillation_weight_trades_the_labels_for_the_teacher(mnist_splits, params):
    from cnn_ocr.models.ensemble import Ensemble

    fp = params.models.base_cnn.model_copy(update={"epochs": 1, "batch_size": 64})
    data = (torch.from_numpy(to_model_input(mnist_splits.train_x[:2000])), torch.from_numpy(mnist_splits.train_y[:2000]))
    val = (torch.from_numpy(to_model_input(mnist_splits.val_x[:500])), torch.from_numpy(mnist_splits.val_y[:500]))

    def trained(weight, teacher):
        p = fp.model_copy(update={"distill": fp.distill.model_copy(update={"weight": weight})})
        with torch_loop.seeded(0, "cpu"):
            model = build("base_cnn", p)
            torch_loop.fit(model, data, val, p, seed=0, teacher=teacher)
        with torch.inference_mode():
            return model.state_dict(), model.eval()(val[0]).argmax(1)

    plain, plain_pred = trained(0.5, None)
    unweighted, _ = trained(0.0, Ensemble([_SureOf(3)]))
    assert all(torch.equal(plain[k], unweighted[k]) for k in plain)  # weight 0: the labels alone, bit for bit
    assert (plain_pred == val[1]).float().mean() > 0.85
    _, taught = trained(1.0, Ensemble([_SureOf(3)]))  # the teacher alone: its digit whatever the image
    assert (taught == 3).float().mean() > 0.9


def test_teachers_load_from_state_dict_files_or_fail_in_one_line(params, tmp_path):
    from cnn_ocr.train import load_teacher

    net = build("base_cnn", params.models.base_cnn).eval()
    torch.save(net.state_dict(), tmp_path / "teacher.pt")
    torch.save(build("improved_cnn", params.models.improved_cnn).state_dict(), tmp_path / "other.pt")

    def with_teachers(*files):
        return load_params("params.yaml", [f"models.base_cnn.distill.teachers=[{', '.join(map(str, files))}]"])

    assert load_teacher("base_cnn", params, "cpu") is None  # params.yaml: no teachers, no distillation
    teacher = load_teacher("base_cnn", with_teachers(tmp_path / "teacher.pt"), "cpu")
    x = torch.from_numpy(to_model_input(np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype=np.uint8)))
    with torch.inference_mode():
        assert torch.allclose(teacher.member_logits(x)[0], net(x)) and not teacher.training
    for bad, needle in [(tmp_path / "missing.pt", "FileNotFoundError"), (tmp_path / "other.pt", "RuntimeError")]:
        with pytest.raises(ConfigError, match=f"models.base_cnn.distill.teachers: cannot load .*{needle}") as err:
            load_teacher("base_cnn", with_teachers(bad), "cpu")
        assert "\n" not in str(err.value)


def test_auto_precision_is_bf16_features_only_on_a_cpu_with_amx():
    assert [torch_loop.resolve_precision(r, "cuda") for r in ("auto", "bf16", "fp32")] == ["fp32", "bf16", "fp32"]
    amx = torch.cpu._is_amx_tile_supported()
    assert torch_loop.resolve_precision("auto", "cpu") == ("bf16_features" if amx else "fp32")


def _shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move each image dy rows down and dx columns right, filling with black."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        images[:, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return out


@pytest.mark.model
def test_every_digit_class_is_learned(small_cnn, mnist_splits):
    x, y = mnist_splits.test_x[:3000], mnist_splits.test_y[:3000]
    pred = class_scores(small_cnn, to_model_input(x)).argmax(1)
    assert np.mean(pred == y) > 0.93
    recalls = [r["recall"] for r in per_digit_metrics(confusion_matrix(y, pred))]
    assert min(recalls) > 0.85, recalls


@pytest.mark.model
@pytest.mark.parametrize(("dy", "dx"), [(0, 1), (1, 0), (-1, -1), (0, -2), (2, 0), (-2, 2)])
def test_small_shift_rarely_changes_the_prediction(small_cnn, mnist_splits, dy, dx):
    x, y = mnist_splits.test_x[:1000], mnist_splits.test_y[:1000]
    scores = class_scores(small_cnn, to_model_input(x))
    before = scores.argmax(1)
    after = class_scores(small_cnn, to_model_input(_shift(x, dy, dx))).argmax(1)
    confident = softmax(scores).max(1) >= 0.9
    assert confident.mean() > 0.6
    # A confident prediction survives the shift; overall accuracy barely moves.
    assert np.mean(before[confident] != after[confident]) <= (0.02 if max(abs(dy), abs(dx)) == 1 else 0.05)
    assert np.mean(after == y) > np.mean(before == y) - 0.06
