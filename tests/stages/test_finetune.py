"""fine_tune: what each strategy trains, its options, augmentation, errors (forgetting:
tests/evaluation/test_forgetting.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mtkit.core.train import LambdaCallback
from mtkit.core.utils import MtkitError
from mtkit.models import Classifier, DenseAutoencoder
from mtkit.stages import augment, finetune
from mtkit.stages.augment import (
    RandomShiftRotate,
    class_weights,
    mixup_pairs,
    oversample,
    shift_rotate,
)
from mtkit.stages.finetune import (
    DEFAULT_LR,
    STRATEGIES,
    configure_optimizer,
    copy_encoder,
    fine_tune,
    predict,
)

QUIET = {"progress": False, "device": "cpu"}


def toy_data(count: int = 40, classes: int = 4, seed: int = 0):
    """count 1×8×8 images in [0, 1] whose class sets the brightness of one quadrant."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    images = 0.3 * torch.rand(count, 1, 8, 8, generator=generator)
    for index, label in enumerate(labels.tolist()):
        row, column = divmod(label, 2)
        images[index, 0, 4 * row : 4 * row + 4, 4 * column : 4 * column + 4] += 0.6
    return images, labels


def toy_classifier(seed: int = 0, hidden=(16,)) -> tuple[DenseAutoencoder, Classifier]:
    torch.manual_seed(seed)
    autoencoder = DenseAutoencoder(hidden_sizes=hidden, latent_size=6)
    return autoencoder, Classifier(copy_encoder(autoencoder), num_classes=4)


def weights(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict, module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


ENCODER = {"encoder.block0.0.weight", "encoder.block0.0.bias", "encoder.latent.weight"}
ENCODER |= {"encoder.latent.bias"}
HEAD = {"head.weight", "head.bias"}


@pytest.mark.parametrize(
    "strategy, trained",
    [
        ("linear_probe", HEAD),
        ("full", ENCODER | HEAD),
        ("discriminative_lr", ENCODER | HEAD),
        ("scratch", ENCODER | HEAD),
    ],
)
def test_each_strategy_trains_exactly_what_it_claims(strategy, trained):
    images, labels = toy_data()
    _, classifier = toy_classifier()
    before = weights(classifier)
    result = fine_tune(classifier, (images, labels), strategy=strategy, epochs=3, **QUIET)
    assert changed(before, classifier) == trained
    grad = {name for name, p in classifier.named_parameters() if p.requires_grad}
    assert grad == trained
    assert result.trainable_parameters == sum(
        p.numel() for name, p in classifier.named_parameters() if name in trained
    )


def test_scratch_reinitialises_instead_of_starting_from_pretrained_weights():
    images, labels = toy_data()
    _, classifier = toy_classifier()
    classifier.feature_mean.fill_(5.0)
    pretrained = weights(classifier)
    fine_tune(classifier, (images, labels), strategy="scratch", epochs=1, lr=1e-6, **QUIET)
    # With a tiny lr, training alone could not move the weights this far: they were reset.
    moved = (classifier.encoder.latent.weight - pretrained["encoder.latent.weight"]).abs()
    assert moved.max() > 1e-2
    assert torch.equal(classifier.feature_mean, torch.zeros(6))


def test_gradual_unfreezing_goes_top_down_on_schedule():
    images, labels = toy_data()
    _, classifier = toy_classifier()
    seen = []  # per epoch: which groups may learn (user callbacks run after the unfreezing)

    def record(trainer):
        seen.append(
            [name for name, m in classifier.layer_groups() if next(m.parameters()).requires_grad]
        )

    before = weights(classifier)
    fine_tune(
        classifier,
        (images, labels),
        strategy="gradual_unfreeze",
        epochs=6,
        epochs_per_group=2,
        callbacks=[LambdaCallback(on_epoch_begin=record)],
        **QUIET,
    )
    head, latent, block0 = ["head"], ["encoder.latent", "head"], ["encoder.block0"]
    assert seen == [head, head, latent, latent, block0 + latent, block0 + latent]
    assert changed(before, classifier) == ENCODER | HEAD


def test_gradual_unfreezing_leaves_lower_groups_untouched_before_their_turn():
    images, labels = toy_data()
    _, classifier = toy_classifier()
    before = weights(classifier)
    fine_tune(
        classifier,
        (images, labels),
        strategy="gradual_unfreeze",
        epochs=3,
        epochs_per_group=2,
        **QUIET,
    )
    assert changed(before, classifier) == HEAD | {"encoder.latent.weight", "encoder.latent.bias"}


def test_discriminative_learning_rates_decay_downwards():
    images, labels = toy_data()
    _, classifier = toy_classifier(hidden=(16, 8))
    rates = []
    result = fine_tune(
        classifier,
        (images, labels),
        strategy="discriminative_lr",
        lr=1e-2,
        lr_decay=0.5,
        epochs=1,
        callbacks=[
            LambdaCallback(
                on_train_begin=lambda t: rates.extend(g["lr"] for g in t.optimizer.param_groups)
            )
        ],
        **QUIET,
    )
    assert rates == pytest.approx([1.25e-3, 2.5e-3, 5e-3, 1e-2])  # block0, block1, latent, head
    assert list(result.group_learning_rates) == [
        "encoder.block0",
        "encoder.block1",
        "encoder.latent",
        "head",
    ]
    assert list(result.group_learning_rates.values()) == pytest.approx(rates)


def test_configure_optimizer_gives_each_layer_group_its_lr_and_weight_decay():
    _, classifier = toy_classifier(hidden=(16, 8))
    optimizer, rates = configure_optimizer(
        classifier, "discriminative_lr", 1e-2, weight_decay=0.1, lr_decay=0.5, l2_sp=1.0
    )
    assert list(rates) == ["encoder.block0", "encoder.block1", "encoder.latent", "head"]
    assert list(rates.values()) == pytest.approx([1.25e-3, 2.5e-3, 5e-3, 1e-2])
    assert [group["lr"] for group in optimizer.param_groups] == list(rates.values())
    # L2-SP replaces weight decay on the pretrained groups; the new head keeps it.
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0, 0.0, 0.0, 0.1]
    _, rates = configure_optimizer(classifier, "full", 1e-2)
    assert set(rates.values()) == {1e-2}


def test_predict_gives_probabilities_in_batches_and_keeps_the_training_mode():
    images, _ = toy_data(10)
    _, classifier = toy_classifier()
    classifier.train()
    probabilities = predict(classifier, images, batch_size=3)
    assert classifier.training
    classifier.eval()
    with torch.no_grad():
        expected = torch.softmax(classifier(images), dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(10))


def test_names_that_moved_out_of_finetune_are_still_reachable_there():
    from mtkit.evaluation import forgetting as moved

    assert finetune.forgetting is moved.forgetting and finetune.Forgetting is moved.Forgetting
    for name in ("shift_rotate", "RandomShiftRotate", "mixup_pairs", "class_weights"):
        assert getattr(finetune, name) is getattr(augment, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        finetune.no_such_name  # noqa: B018


def test_every_strategy_has_a_default_lr_and_an_explicit_lr_wins():
    assert set(DEFAULT_LR) == set(STRATEGIES)
    images, labels = toy_data()
    _, classifier = toy_classifier()
    result = fine_tune(classifier, (images, labels), strategy="full", lr=0.123, epochs=1, **QUIET)
    assert set(result.group_learning_rates.values()) == {0.123}


def distance_to_start(l2_sp: float) -> float:
    images, labels = toy_data()
    _, classifier = toy_classifier()
    start = weights(classifier.encoder)
    fine_tune(
        classifier,
        (images, labels),
        strategy="full",
        lr=1e-2,
        epochs=15,
        l2_sp=l2_sp,
        seed=0,
        **QUIET,
    )
    return sum(
        (p.detach() - start[name]).pow(2).sum().item()
        for name, p in classifier.encoder.named_parameters()
    )


def test_l2_sp_keeps_the_encoder_closer_to_its_pretrained_weights():
    assert distance_to_start(l2_sp=1.0) < 0.5 * distance_to_start(l2_sp=0.0)


def test_class_weights_make_every_class_count_equally():
    labels = torch.tensor([0] * 30 + [1] * 3 + [2] * 7)
    logits = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    weighted = F.cross_entropy(logits, labels, weight=class_weights(labels, 3))
    per_example = F.cross_entropy(logits, labels, reduction="none")
    mean_of_class_means = torch.stack([per_example[labels == c].mean() for c in range(3)]).mean()
    assert weighted.item() == pytest.approx(mean_of_class_means.item(), rel=1e-5)


def test_oversampling_balances_classes_by_repeating_real_examples():
    inputs = torch.arange(13.0)[:, None]
    labels = torch.tensor([0] * 10 + [1] * 3)
    new_inputs, new_labels = oversample(inputs, labels)
    assert torch.bincount(new_labels).tolist() == [10, 10]
    for x, y in zip(new_inputs, new_labels, strict=True):  # every row is an original pair
        assert labels[int(x.item())] == y


def test_weighted_loss_and_oversampling_both_train():
    images, labels = toy_data()
    keep = torch.cat([torch.arange(40)[labels != 3], torch.tensor([3, 7])])
    for balance in ("weighted_loss", "oversample"):
        _, classifier = toy_classifier()
        result = fine_tune(
            classifier, (images[keep], labels[keep]), class_balance=balance, epochs=2, **QUIET
        )
        assert len(result.history) == 2


def test_shift_rotate_matches_torchvision_affine_image_by_image():
    images = torch.rand(3, 1, 8, 10, generator=torch.Generator().manual_seed(0))
    angles = torch.tensor([0.0, 12.0, -20.0])
    shifts = torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.5, 0.25]])
    ours = shift_rotate(images, angles, shifts)
    for image, angle, shift, mine in zip(images, angles, shifts, ours, strict=True):
        reference = TF.affine(
            image,
            angle=float(angle),
            translate=shift.tolist(),
            scale=1.0,
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
        )
        assert torch.allclose(mine, reference, atol=1e-5)


def test_augmentation_changes_images_not_their_number_or_shape():
    torch.manual_seed(0)
    images, _ = toy_data()
    augmented = RandomShiftRotate(max_shift=1.0, max_rotation=15)(images)
    assert augmented.shape == images.shape
    assert not torch.allclose(augmented, images)
    assert torch.equal(RandomShiftRotate(0.0, 0.0)(images), images)


def test_augmentation_sees_training_batches_only():
    images, labels = toy_data()
    calls = []

    def spy(batch):
        calls.append(tuple(batch.shape))
        return batch.flip(-1)

    _, classifier = toy_classifier()
    fine_tune(
        classifier,
        (images, labels),
        validation=(images[:8], labels[:8]),
        augment=spy,
        epochs=2,
        batch_size=40,
        **QUIET,
    )
    assert calls == [(40, 1, 8, 8)] * 2  # one training batch per epoch; validation untouched


def test_augmented_images_keep_their_labels():
    """Small shifts and rotations keep each image's class, so the task is still learnable."""
    images, labels = toy_data()
    _, classifier = toy_classifier()
    fine_tune(classifier, (images, labels), augment=True, epochs=40, seed=0, **QUIET)
    accuracy = (predict(classifier, images).argmax(dim=1) == labels).float().mean()
    assert accuracy == 1.0


def test_mixup_pairs_fold_the_share_and_permute_the_batch():
    torch.manual_seed(0)
    for alpha in (0.2, 1.0, 5.0):
        share, partner = mixup_pairs(16, alpha)
        assert 0.5 <= share <= 1.0
        assert sorted(partner.tolist()) == list(range(16))
    # A small alpha puts Beta's mass near 0 and 1; folded, the share is nearly always near 1.
    shares = torch.tensor([mixup_pairs(4, 0.01)[0] for _ in range(200)])
    assert shares.mean() > 0.95
    with pytest.raises(MtkitError, match="alpha"):
        mixup_pairs(4, 0.0)  # Beta(0, 0) is no distribution: 0 means "no mixup", not a draw
    with pytest.raises(MtkitError, match="batch_size"):
        mixup_pairs(0, 0.4)


def test_mixup_blends_training_images_and_their_labels(monkeypatch):
    images, labels = toy_data()
    share, partner = 0.7, torch.arange(40).flip(0)  # example k is blended with example 39 − k
    monkeypatch.setattr("mtkit.stages.finetune.mixup_pairs", lambda size, alpha: (share, partner))
    _, classifier = toy_classifier()
    start = copy.deepcopy(classifier)
    seen = []
    classifier.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, args[0].clone()))
    )
    validation = (images[:8], labels[:8])
    result = fine_tune(
        classifier, (images, labels), validation=validation, mixup=0.4, epochs=1, batch_size=40,
        **QUIET,
    )  # fmt: skip
    training = [batch for training, batch in seen if training]
    assert len(training) == 1
    # Undo the blend (m_k = 0.7·a_k + 0.3·a_39−k is invertible) to find the shuffled batch a;
    # every row of it must be one of the original images.
    mixed = training[0]
    unmixed = (share * mixed - (1 - share) * mixed[partner]) / (share**2 - (1 - share) ** 2)
    distances = torch.cdist(unmixed.flatten(1), images.flatten(1))
    assert distances.min(dim=1).values.max() < 1e-2  # other images are ~1 apart
    order = distances.argmin(dim=1)
    assert sorted(order.tolist()) == list(range(40))
    # Validation sees the plain images.
    assert any(torch.equal(batch, validation[0]) for training, batch in seen if not training)
    # One batch, one step: the recorded loss is the blended loss at the starting weights.
    with torch.no_grad():
        logits = start(mixed)
        batch_labels = labels[order]
        expected = share * F.cross_entropy(logits, batch_labels) + (1 - share) * F.cross_entropy(
            logits, batch_labels[partner]
        )
    assert result.history["train_loss"][0] == pytest.approx(expected.item(), rel=1e-5)


def test_mixup_off_trains_on_the_images_as_they_are():
    images, labels = toy_data()
    _, classifier = toy_classifier()
    seen = []
    classifier.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    fine_tune(classifier, (images, labels), epochs=1, batch_size=40, **QUIET)
    distances = torch.cdist(seen[0].flatten(1), images.flatten(1))
    assert distances.min(dim=1).values.max() < 1e-2  # every row is an image as it was


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "freeze_all"}, "unknown strategy"),
        ({"class_balance": "smote"}, "unknown class_balance"),
        ({"l2_sp": -1.0}, "l2_sp"),
        ({"lr": 0.0}, "lr"),
        ({"lr_decay": 1.5}, "lr_decay"),
        ({"dropout": 1.0}, "dropout"),
        ({"mixup": -0.4}, "mixup"),
        ({"augment": "yes"}, "augment"),
        ({"monitor": "val_f1"}, "unknown monitor"),
        ({"optimizer": "sgd"}, "optimizer"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    images, labels = toy_data()
    _, classifier = toy_classifier()
    with pytest.raises(MtkitError, match=message):
        fine_tune(classifier, (images, labels), epochs=1, **kwargs, **QUIET)


def test_unlabelled_data_and_out_of_range_labels_are_rejected():
    images, labels = toy_data()
    _, classifier = toy_classifier()
    with pytest.raises(MtkitError, match="hidden on purpose"):
        fine_tune(classifier, (images,), epochs=1, **QUIET)
    with pytest.raises(MtkitError, match=r"\[0, 4\)"):
        fine_tune(classifier, (images, labels + 1), epochs=1, **QUIET)


def test_fine_tune_leaves_the_autoencoder_alone():
    images, labels = toy_data()
    autoencoder, classifier = toy_classifier()
    before = copy.deepcopy(autoencoder.state_dict())
    fine_tune(classifier, (images, labels), strategy="full", epochs=2, **QUIET)
    assert all(torch.equal(before[k], v) for k, v in autoencoder.state_dict().items())
