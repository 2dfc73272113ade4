"""One place attaches a method (strategy × addition) to a classifier; new additions register."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from mtkit.core.utils import MtkitError, seed_everything
from mtkit.data import ImageDataset, few_labels
from mtkit.experiments import FineTuneMethod, PretrainCache, PretrainSpec, label_efficiency
from mtkit.models import Classifier, DenseAutoencoder
from mtkit.stages import method as M
from mtkit.stages.adapters import AdaptedModule, freeze_base
from mtkit.stages.adapters.wrapper import _wrap

TINY = PretrainSpec(hidden_sizes=(16,), latent_size=6, epochs=2, batch_size=64)


def classifier() -> Classifier:
    seed_everything(0)
    autoencoder = DenseAutoencoder(input_shape=(1, 4, 4), hidden_sizes=(8,), latent_size=3)
    return Classifier(autoencoder.encoder, num_classes=3)


def dataset(count: int = 90) -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 3
    images = torch.rand(count, 1, 4, 4, generator=generator) * 0.1 + 0.4 * labels.view(-1, 1, 1, 1)
    return ImageDataset.from_tensors(images, labels)


def trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_a_fresh_adapter_changes_nothing_and_only_it_and_the_head_train():
    model, inputs = classifier(), torch.rand(5, 1, 4, 4)
    before = model(inputs)
    M.attach(model, M.LoRA(rank=2), head="keep")
    assert torch.equal(model(inputs), before)  # B starts at zero
    names = trainable(model)
    assert names and all("adapters.default" in n or n.startswith("head.") for n in names)
    assert {"head.weight", "head.bias"} <= names


@pytest.mark.parametrize("head", ["new_task", "task_from_head"])
def test_a_task_head_is_new_or_starts_from_the_old_one(head):
    model, inputs = classifier(), torch.rand(5, 1, 4, 4)
    before = model(inputs)
    M.attach(model, M.Bottleneck(size=2), head=head, adapter_name="digits")
    assert "head.adapters.digits.weight" in trainable(model)
    assert torch.equal(model(inputs), before) == (head == "task_from_head")


def test_strategy_and_addition_combinations_that_would_mean_something_else_are_refused():
    with pytest.raises(MtkitError, match="linear_probe"):
        M.check_method("full", M.LoRA())
    with pytest.raises(MtkitError, match="scratch"):
        M.check_method("scratch", M.MLPHead())
    with pytest.raises(MtkitError, match="unknown strategy"):
        M.check_method("frozen", None)
    with pytest.raises(MtkitError, match="unknown addition"):
        M.resolve_addition("adapterz")
    with pytest.raises(MtkitError, match="unknown head"):
        M.attach(classifier(), M.LoRA(), head="old")
    with pytest.raises(MtkitError, match="lora rank"):
        M.LoRA(rank=0)
    with pytest.raises(MtkitError, match="does not say where"):
        M.attach(Classifier(nn.Linear(4, 3), 3, feature_size=3), M.LoRA())
    with pytest.raises(MtkitError, match="Addition subclass"):
        M.register_addition(int)


def test_an_mlp_head_leaves_the_encoder_to_the_strategy():
    model = classifier()
    M.attach(model, M.MLPHead(hidden=5))
    assert isinstance(model.head, nn.Sequential) and model.head[0].out_features == 5
    data = few_labels(dataset(), 5, test_size=30, seed=0)
    result = M.train_method(model, data.labelled, "linear_probe", M.MLPHead(hidden=5),
                            epochs=2, progress=False)  # fmt: skip
    assert result.trainable_parameters == sum(p.numel() for p in model.head.parameters())


class Scale(nn.Module):
    """A toy adapter: a learned per-feature scale after a layer (starts at 1: no change)."""

    def __init__(self, features: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(features))


class Scaled(AdaptedModule):
    def forward(self, x):
        out = self.base(x)
        return out if self.active is None else out * self.active.scale

    def add(self, name: str, features: int) -> Scale:
        self.adapters[name] = Scale(features)
        self.active_adapter = name
        return self.adapters[name]


@dataclass(frozen=True)
class ToyScale(M.Addition):
    kind: ClassVar[str] = "toy_scale"

    def attach(self, classifier, adapter_name):
        name = classifier.encoder.layer_groups()[-1][0]
        wrapper = _wrap(classifier, f"encoder.{name}", Scaled)
        wrapper.add(adapter_name, classifier.feature_size)
        freeze_base(classifier)

    @property
    def label(self):
        return "toy scale"


def test_a_new_adapter_is_one_class_and_one_registration(monkeypatch):
    monkeypatch.setitem(M.ADDITIONS, "toy_scale", None)  # removed again after the test
    M.register_addition(ToyScale)
    method = FineTuneMethod(addition="toy_scale", pretrain=TINY, options={"epochs": 2})
    assert method.name == "pretrained + toy scale" and method.chosen_strategy == "linear_probe"
    table = label_efficiency(dataset(), [method], labels_per_class=(3,), seeds=(0,), test_size=30)
    # The scale (6 features) and the head (6 × 3 + 3) trained; the encoder did not.
    assert table.rows[0].trainable_parameters == 6 + 6 * 3 + 3


def test_every_method_predicts_labels_and_probabilities_the_same_way():
    split = few_labels(dataset(), 5, test_size=30, seed=0)
    cache = PretrainCache()
    for method in (
        FineTuneMethod(pretrain=TINY, options={"epochs": 2}),
        FineTuneMethod(addition="lora", pretrain=TINY, options={"epochs": 2}),
        dataclasses.replace(FineTuneMethod(pretrain=TINY), addition=M.MLPHead(hidden=4)),
    ):
        fitted = method.fine_tuned(split, 0, cache)
        probabilities = method.predict_proba(fitted, split.test, cache)
        assert probabilities.shape == (30, 3)
        assert torch.allclose(probabilities.sum(dim=1), torch.ones(30))
        assert torch.equal(method.predict(fitted, split.test.images, cache),
                           probabilities.argmax(dim=1))  # fmt: skip


def test_add_prompt_starts_from_vocabulary_rows_and_trains_alone():
    from mtkit.models import TextEncoder
    from mtkit.stages.adapters import add_prompt

    seed_everything(0)
    model = Classifier(TextEncoder(vocab_size=30, max_length=6, width=8, depth=1, heads=2), 2)
    prompt = add_prompt(model, num_prompts=3)
    rows = model.encoder.token_embedding.weight
    assert all(any(torch.equal(vector, row) for row in rows) for vector in prompt.vectors)
    assert trainable(model) == {"encoder.prompt.adapters.default.vectors"}
    assert model(torch.randint(4, 30, (5, 6))).shape == (5, 2)
    with pytest.raises(MtkitError, match="prompt"):
        add_prompt(classifier())
