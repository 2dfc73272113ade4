"""summary(model): exact parameter counts, trainable counts, output shapes, no side effects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtkit.core.utils import MtkitError
from mtkit.models import DenseAutoencoder
from mtkit.models.classifier import Classifier
from mtkit.models.summary import summary
from mtkit.stages.adapters import add_lora


def small_conv_net() -> nn.Sequential:
    """1×8×8 images -> 10 logits."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    )


def row(result, name):
    return next(row for row in result.rows if row.name == name)


def test_output_shapes_of_a_small_conv_net():
    result = summary(small_conv_net(), (2, 1, 8, 8))
    shapes = [(row.name, row.type, row.output_shape) for row in result.rows]
    assert shapes == [
        ("", "Sequential", [2, 10]),
        ("0", "Conv2d", [2, 4, 8, 8]),
        ("1", "BatchNorm2d", [2, 4, 8, 8]),
        ("2", "ReLU", [2, 4, 8, 8]),
        ("3", "MaxPool2d", [2, 4, 4, 4]),
        ("4", "Dropout", [2, 4, 4, 4]),
        ("5", "Flatten", [2, 64]),
        ("6", "Linear", [2, 10]),
    ]
    assert "[2, 4, 4, 4]" in str(result) and "output shape" in str(result)


def test_counts_are_exact_and_trainable_counts_follow_requires_grad():
    model = small_conv_net()
    model[0].requires_grad_(False)  # freeze the convolution
    result = summary(model)
    assert result.total_params == sum(p.numel() for p in model.parameters()) == 698
    assert result.trainable_params == 698 - (4 * 9 + 4)
    assert result.frozen_params == 40
    assert (row(result, "0").params, row(result, "0").trainable) == (40, 0)
    assert (row(result, "6").params, row(result, "6").trainable) == (650, 650)
    assert row(result, "").params == 698  # the model's row holds everything inside it
    assert all(row.output_shape is None for row in result.rows)  # no input, no shapes
    assert "output shape" not in str(result)
    # 698 float32 parameters and BatchNorm's buffers: 2×4 float32 and one int64 count.
    assert result.size_mb == pytest.approx((698 * 4 + 8 * 4 + 8) / 1e6)


def test_trainable_counts_after_add_lora():
    classifier = Classifier(DenseAutoencoder(hidden_sizes=(16, 8)).encoder, num_classes=3)
    before = sum(p.numel() for p in classifier.parameters())
    add_lora(classifier, nn.Linear, rank=2)  # freezes everything but the LoRA weights
    result = summary(classifier, (5, 1, 8, 8))
    # rank 2: A is 2×inputs and B outputs×2 for the 64->16, 16->8, 8->32 and 32->3 layers.
    lora = 2 * (64 + 16) + 2 * (16 + 8) + 2 * (8 + 32) + 2 * (32 + 3)
    assert result.total_params == sum(p.numel() for p in classifier.parameters()) == before + lora
    assert result.trainable_params == sum(
        p.numel() for p in classifier.parameters() if p.requires_grad
    )
    assert result.trainable_params == lora
    assert row(result, "").output_shape == [5, 3]
    first = row(result, "encoder.block0.0")
    assert (first.type, first.params, first.trainable) == ("LoRALinear", 64 * 16 + 16 + 160, 160)


def test_a_shared_weight_counts_once():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    result = summary(model)
    assert result.total_params == sum(p.numel() for p in model.parameters()) == 16 + 4 + 4


def test_depth_limits_the_rows_not_the_totals():
    classifier = Classifier(DenseAutoencoder(hidden_sizes=(16, 8)).encoder, num_classes=3)
    shallow = summary(classifier, depth=1)
    assert {row.depth for row in shallow.rows} == {0, 1}
    assert shallow.total_params == summary(classifier).total_params
    assert [row.name for row in summary(classifier, depth=0).rows] == [""]


def test_the_forward_pass_leaves_the_model_as_it_was():
    model = small_conv_net()
    model.train()
    model[4].eval()  # one module in another mode than the rest stays so
    statistics = model[1].running_mean.clone()
    summary(model, torch.randn(3, 1, 8, 8) + 5.0)  # train mode would move the running mean
    assert torch.equal(model[1].running_mean, statistics)
    assert model.training and model[0].training and not model[4].training
    assert all(not module._forward_hooks for module in model.modules())


def test_a_real_input_and_outputs_that_are_not_one_tensor():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(20, 6)
            self.unused = nn.Linear(6, 6)

        def forward(self, ids, mask):
            states = self.embedding(ids) * mask.unsqueeze(-1)
            return states, {"pooled": states.mean(1)}

    ids, mask = torch.randint(0, 20, (2, 7)), torch.ones(2, 7)
    result = summary(TwoHeads(), (ids, mask))
    assert row(result, "").output_shape == [[2, 7, 6], {"pooled": [2, 6]}]
    assert row(result, "embedding").output_shape == [2, 7, 6]
    assert row(result, "unused").output_shape == "--"  # the forward never called it


def test_html_for_jupyter():
    page = summary(small_conv_net(), (1, 1, 8, 8))._repr_html_()
    assert page.startswith("<table") and "<td>Conv2d</td>" in page and "698" in page


@pytest.mark.parametrize(
    "model, inputs, message",
    [
        ("not a model", None, "model must be a torch nn.Module"),
        (nn.Linear(3, 2), "3", "inputs must be a shape"),
        (nn.Linear(3, 2), (1, 0), "inputs must be a shape"),
        (nn.Linear(3, 2), (1, 5), r"forward failed on inputs of shape \[\(1, 5\)\]"),
    ],
)
def test_bad_arguments_are_clear_errors(model, inputs, message):
    with pytest.raises(MtkitError, match=message):
        summary(model, inputs)
