"""The weight average of the training loop: its arithmetic, that training keeps it, and that resuming keeps it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnn_ocr.config import load_params
from cnn_ocr.fit import torch_loop
from cnn_ocr.fit.ema import WeightAverage
from cnn_ocr.models import build
from cnn_ocr.preprocess import to_model_input

QUICK = ["device=cpu", "models.base_cnn.epochs=3", "models.base_cnn.max_train_samples=600",
         "models.base_cnn.conv_filters=4", "models.base_cnn.dense_units=16", "models.base_cnn.batch_size=64"]


def test_average_follows_the_warmed_up_decay_and_swaps_back():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    avg = WeightAverage(net, decay=0.9)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    avg.update(net)  # step 1: decay min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(avg.shadow["0.weight"], d * start + (1 - d) * (start + 1.0))
    assert avg.shadow["1.num_batches_tracked"].dtype == torch.long
    own = net[0].weight.detach().clone()
    with avg.swapped_in(net):
        assert torch.equal(net[0].weight, avg.shadow["0.weight"])
    assert torch.equal(net[0].weight, own)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, decay=1.0)


def _fit(p, splits, **kw):
    fp = p.models.base_cnn
    data = [(torch.from_numpy(to_model_input(x[:600])), torch.from_numpy(y[:600].astype("int64")))
            for x, y in ((splits.train_x, splits.train_y), (splits.val_x, splits.val_y))]
    with torch_loop.seeded(p.seed, "cpu"):
        model = build("base_cnn", fp)
        result = torch_loop.fit(model, data[0], data[1], fp, seed=p.seed, eval_batch_size=512, **kw)
    return model, result


def test_training_validates_and_keeps_the_average_and_resumes_to_the_same_weights(tiny_splits):
    plain = load_params("params.yaml", QUICK)
    averaged = load_params("params.yaml", [*QUICK, "models.base_cnn.ema_decay=0.95"])
    base_model, _ = _fit(plain, tiny_splits)
    states: list[dict] = []
    model, result = _fit(averaged, tiny_splits, on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    assert not torch.equal(next(model.parameters()), next(base_model.parameters()))
    saved = states[0]["average"]
    assert saved is not None and saved["updates"] > 0
    # The returned weights are the average after the last step (what validation scored in the last epoch).
    final_avg = states[-1]["average"]["shadow"]
    assert all(torch.equal(v, final_avg[k]) for k, v in model.state_dict().items())
    resumed, resumed_result = _fit(averaged, tiny_splits, resume=states[0])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in resumed.state_dict().items())
    assert [h["val_accuracy"] for h in resumed_result.history] == [h["val_accuracy"] for h in result.history]
