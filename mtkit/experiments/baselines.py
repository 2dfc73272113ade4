"""What a practitioner would use instead: scikit-learn models fitted on the labelled examples.

Each follows the method protocol (mtkit.experiments.protocol), so `label_efficiency` runs it
beside the neural methods: `fine_tuned` fits a scikit-learn Pipeline on `split.labelled` (and
picks hyperparameters on `split.validation` where it has any), `predict_proba` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mtkit.core.batches import as_inputs
from mtkit.core.utils import MtkitError, check_positive
from mtkit.experiments.protocol import FineTuned, Method


def _flat_pixels(data) -> np.ndarray:
    """N×(C·H·W) float array of an image dataset or an N×C×H×W tensor."""
    images = data.images if hasattr(data, "images") else as_inputs(data)
    return images.reshape(len(images), -1).numpy()


def _texts(data) -> list[str]:
    return list(data.texts) if hasattr(data, "texts") else list(data)


class SklearnMethod(Method):
    """A fitted scikit-learn estimator as a method: its linear part counts as trainable."""

    def features(self, data):
        raise NotImplementedError

    def predict_proba(self, fitted: FineTuned, data, cache=None) -> torch.Tensor:
        return torch.as_tensor(fitted.model.predict_proba(self.features(data)), dtype=torch.float32)

    def predict(self, fitted: FineTuned, data, cache=None) -> torch.Tensor:
        return torch.as_tensor(fitted.model.predict(self.features(data)))

    @staticmethod
    def fitted(model) -> FineTuned:
        head = model[-1] if hasattr(model, "steps") else model
        return FineTuned(model, trainable_parameters=head.coef_.size + head.intercept_.size)


@dataclass
class LogisticRegressionBaseline(SklearnMethod):
    """scikit-learn's LogisticRegression on raw pixels, fitted on the labelled images only."""

    C: float = 1.0
    name: str = "logistic regression on pixels"

    def features(self, data):
        return _flat_pixels(data)

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.C, max_iter=5000, random_state=seed)
        model.fit(_flat_pixels(split.labelled), split.labelled.labels.numpy())
        return self.fitted(model)


@dataclass
class PCALogisticBaseline(SklearnMethod):
    """PCA to `components` dimensions, then LogisticRegression; both fitted on the labelled images
    only (what a scikit-learn Pipeline would do). The components keep their natural scale:
    whitening them hurts with 5 labels per class. Fewer labelled images than `components` means
    as many components as there are labelled images."""

    components: int = 30
    C: float = 1.0
    name: str = "PCA + logistic regression"

    def __post_init__(self):
        check_positive("components", self.components, integer=True)

    def features(self, data):
        return _flat_pixels(data)

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        pixels = _flat_pixels(split.labelled)
        components = min(self.components, *pixels.shape)
        model = make_pipeline(
            PCA(components, random_state=seed),
            LogisticRegression(C=self.C, max_iter=5000, random_state=seed),
        )
        model.fit(pixels, split.labelled.labels.numpy())
        return self.fitted(model)


@dataclass
class TfidfLogisticBaseline(SklearnMethod):
    """TF-IDF of words and word pairs, then a class-weighted logistic regression: the model a
    practitioner would reach for first. Both are fitted on the labelled texts only (as a
    scikit-learn Pipeline would be); the regularisation C is the best of `C_grid` on the
    validation texts, as GridSearchCV would choose it."""

    C_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
    ngram_range: tuple[int, int] = (1, 2)
    name: str = "TF-IDF + logistic regression"

    def __post_init__(self):
        if not self.C_grid:
            raise MtkitError("C_grid needs at least one value")

    def features(self, data):
        return _texts(data)

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        labels = split.labelled.labels.numpy()

        def model_for(C):
            vectorizer = TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=True)
            model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
            return make_pipeline(vectorizer, model).fit(split.labelled.texts, labels)

        validation_labels = split.validation.labels.numpy()
        scores = [
            model_for(C).score(split.validation.texts, validation_labels) for C in self.C_grid
        ]
        return self.fitted(model_for(self.C_grid[int(np.argmax(scores))]))
