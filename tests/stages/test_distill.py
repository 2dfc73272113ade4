"""Distillation: the loss's mathematics, and that a student learns to agree with its teacher."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.utils import MtkitError
from mtkit.stages.distill import distill, distillation_loss, soft_targets


def test_at_temperature_one_with_one_hot_targets_it_is_cross_entropy():
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1])
    one_hot = F.one_hot(labels, 3).float()
    expected = F.cross_entropy(logits, labels)
    assert torch.allclose(distillation_loss(logits, one_hot, 1.0), expected)
    # The hard term adds hard_weight × the same cross-entropy, at temperature 1 whatever T is.
    soft = soft_targets(torch.randn(8, 3), 4.0)
    combined = distillation_loss(logits, soft, 4.0, hard_labels=labels, hard_weight=0.5)
    assert torch.allclose(combined, distillation_loss(logits, soft, 4.0) + 0.5 * expected)


def test_soft_targets_soften_with_temperature_and_keep_the_order():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    sharp, soft = soft_targets(logits, 1.0), soft_targets(logits, 5.0)
    assert torch.allclose(sharp, torch.softmax(logits, dim=1))
    assert torch.allclose(soft.sum(dim=1), torch.ones(1))
    assert soft.max() < sharp.max() and (soft.argsort() == sharp.argsort()).all()
    # From probabilities alone: softmax(log p / T) is p^(1/T), normalised.
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    expected = probs ** (1 / 3) / (probs ** (1 / 3)).sum()
    assert torch.allclose(soft_targets(probs.log(), 3.0), expected)


def _gradient(student, teacher, temperature):
    student = student.clone().requires_grad_(True)
    distillation_loss(student, soft_targets(teacher, temperature), temperature).backward()
    return student.grad


def test_t_squared_keeps_the_gradient_size_comparable_across_temperatures():
    generator = torch.Generator().manual_seed(1)
    student, teacher = (
        torch.randn(16, 3, generator=generator),
        torch.randn(16, 3, generator=generator),
    )
    at_4, at_16 = (_gradient(student, teacher, t).norm() for t in (4.0, 16.0))
    assert 0.8 < at_4 / at_16 < 1.25  # without T² the ratio would be about 16


def test_the_gradient_vanishes_where_the_student_matches_the_teacher():
    teacher = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    for temperature in (1.0, 3.0):
        assert _gradient(teacher, teacher, temperature).abs().max() < 1e-6
        # The minimum is T² × the entropy of the soft targets (the KL part is 0 there).
        targets = soft_targets(teacher, temperature)
        entropy = -(targets * targets.log()).sum(dim=1).mean()
        loss = distillation_loss(teacher, targets, temperature)
        assert torch.allclose(loss, temperature**2 * entropy)
        assert distillation_loss(teacher + 1.0 * torch.randn(6, 3), targets, temperature) > loss


def test_bad_arguments_are_named():
    with pytest.raises(MtkitError, match="temperature"):
        distillation_loss(torch.zeros(2, 3), torch.full((2, 3), 1 / 3), 0.0)
    with pytest.raises(MtkitError, match="B×C"):
        distillation_loss(torch.zeros(2, 3), torch.full((2, 2), 0.5), 1.0)
    with pytest.raises(MtkitError, match="rows"):
        distill(nn.Linear(2, 3), torch.zeros(4, 2), torch.full((3, 3), 1 / 3), epochs=1)
    with pytest.raises(MtkitError, match="probabilities"):
        distill(nn.Linear(2, 3), torch.zeros(4, 2), torch.ones(4, 3), epochs=1)


def _toy_problem(count, generator):
    """Points in the plane, and a teacher: a fixed nonlinear map to three classes."""
    points = torch.randn(count, 2, generator=generator)
    logits = torch.stack([points[:, 0] * 3, points[:, 1] * 3, -(points**2).sum(dim=1)], dim=1)
    return points, torch.softmax(logits, dim=1)


def test_distill_makes_a_small_student_agree_with_its_teacher():
    generator = torch.Generator().manual_seed(0)
    pool, teacher_probs = _toy_problem(600, generator)
    held_out, held_out_probs = _toy_problem(300, generator)
    labelled = (pool[:6], teacher_probs[:6].argmax(dim=1))
    validation = (held_out[:100], held_out_probs[:100].argmax(dim=1))
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
    result = distill(
        student, pool, teacher_probs, temperature=2.0, labelled=labelled, validation=validation,
        epochs=60, lr=1e-2, batch_size=64, patience=20, seed=0,
    )  # fmt: skip
    with torch.no_grad():
        agreement = (student(held_out).argmax(1) == held_out_probs.argmax(1)).float().mean()
    assert agreement >= 0.9
    history = result.history
    assert "val_accuracy" in history.records[-1] and "train_accuracy" in history.records[-1]
    best = max(record["val_accuracy"] for record in history.records)
    with torch.no_grad():  # the best epoch's weights were kept
        kept = (student(validation[0]).argmax(1) == validation[1]).float().mean()
    assert kept == pytest.approx(best)
    assert result.trainable_parameters == sum(p.numel() for p in student.parameters())
