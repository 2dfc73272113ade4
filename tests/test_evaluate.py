import numpy as np
import pytest
import torch
from torch import nn

import mtkit as mt
from mtkit.evaluate import embed, knn_accuracy, linear_probe_accuracy
from mtkit.utils import MtkitError


def _blobs(count, seed):
    """Two well separated classes in 4-D, as a labelled ImageDataset of 1×2×2 'images'."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    points = torch.randn(count, 4, generator=generator) * 0.05 + 0.25 + 0.5 * labels[:, None]
    return mt.ImageDataset.from_tensors(points.clamp(0, 1).reshape(count, 1, 2, 2), labels)


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, images):
        return images.flatten(1)


def test_embed_shapes_and_keeps_training_mode():
    encoder = mt.DenseAutoencoder(latent_size=3).encoder
    encoder.train()
    codes = embed(encoder, torch.rand(10, 1, 8, 8), batch_size=4)
    assert codes.shape == (10, 3) and isinstance(codes, np.ndarray)
    assert encoder.training


def test_probes_find_separable_classes():
    train, test = _blobs(40, 0), _blobs(40, 1)
    assert knn_accuracy(Identity(), train, test) == 1.0
    assert linear_probe_accuracy(Identity(), train, test) == 1.0


def test_a_constant_encoder_scores_at_chance():
    class Constant(Identity):
        def forward(self, images):
            return torch.zeros(len(images), 2)

    train, test = _blobs(40, 0), _blobs(40, 1)
    assert linear_probe_accuracy(Constant(), train, test) == pytest.approx(0.5)


def test_probes_need_labels():
    train = _blobs(10, 0)
    with pytest.raises(MtkitError, match="labelled"):
        knn_accuracy(Identity(), train.without_labels(), train)
    with pytest.raises(MtkitError, match="empty"):
        embed(Identity(), torch.zeros(0, 1, 2, 2))


def test_nearest_neighbours_by_cosine():
    from mtkit.evaluate import nearest_neighbours

    codes = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
    assert nearest_neighbours(codes, np.array([[2.0, 0.1]]), count=2).tolist() == [[0, 2]]


def test_probes_accept_tuples():
    train, test = _blobs(40, 0), _blobs(40, 1)
    assert knn_accuracy(Identity(), train.tensors, test.tensors) == 1.0
    with pytest.raises(MtkitError, match="encode texts first"):
        embed(Identity(), ["a text"])
