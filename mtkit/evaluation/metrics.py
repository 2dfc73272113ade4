"""Evaluation: how good is a model, and where does it fail?

    result = evaluate(classifier, split.test)          # images, texts (with tokenizer=) or tuples
    print(result.report)                               # accuracy, macro-F1, per-class P/R/F1
    confident_mistakes(result, 12)                     # the wrong answers it was surest of
    class_errors(result)                               # error rate and worst confusion per class
    temperature = fit_temperature(evaluate(classifier, split.validation))
    calibrated = result.with_temperature(temperature)  # same predictions, honest probabilities

Standard metrics come from scikit-learn. This module also gathers, under the one name notebooks
import from, what lives next to it in mtkit.evaluation:

    probes.py          embed, knn_accuracy, linear_probe_accuracy, nearest_neighbours
    calibration.py     reliability_curve, expected_calibration_error, fit_temperature,
                       TemperatureScaled
    masked_tokens.py   masked_token_error, masked_token_forgetting

Statistics over seeds (`compare`) live in mtkit.evaluation.stats; the figures in
mtkit.plots.evaluation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mtkit.core.batches import forward_in_batches
from mtkit.core.checks import check_class_labels, check_finite, check_instance, check_names, shown
from mtkit.core.utils import MtkitError, check_positive
from mtkit.evaluation.calibration import (
    DEFAULT_BINS,
    ReliabilityCurve,
    TemperatureScaled,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from mtkit.evaluation.inputs import class_indices, labelled_inputs
from mtkit.evaluation.masked_tokens import masked_token_error, masked_token_forgetting
from mtkit.evaluation.probes import embed, knn_accuracy, linear_probe_accuracy, nearest_neighbours

# ---------------------------------------------------------------------------------------------
# Metrics and the Evaluation result.


@dataclass
class ClassificationReport:
    """scikit-learn's metrics for one set of predictions.

    precision, recall, f1: float arrays (C,), one entry per class; support: int array (C,) of
    true examples per class. confusion: C×C int array, row = true class, column = predicted.
    text: scikit-learn's classification_report, the table `print(report)` shows.
    """

    accuracy: float
    macro_f1: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion: np.ndarray
    class_names: list[str]
    text: str

    def __str__(self) -> str:
        return self.text


def classification_report(labels, predictions, class_names=None) -> ClassificationReport:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    labels, predictions: N class indices each, or N class names each (strings). class_names:
    one name per class (default "0", "1", ...; the number of classes is then the largest index
    + 1; for string labels, the sorted names that occur). A class that is never predicted gets
    precision 0 (scikit-learn's zero_division=0), not an error.
    """
    from sklearn import metrics

    labels, predictions, class_names = class_indices(labels, predictions, class_names)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    return ClassificationReport(
        accuracy=float(metrics.accuracy_score(labels, predictions)),
        macro_f1=float(
            metrics.f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)
        ),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        confusion=metrics.confusion_matrix(labels, predictions, labels=classes),
        class_names=list(class_names),
        text=metrics.classification_report(
            labels,
            predictions,
            labels=classes,
            target_names=list(class_names),
            digits=3,
            zero_division=0,
        ),
    )


@dataclass
class Evaluation:
    """A model's answers on a labelled dataset, and everything computed from them.

    labels: int64 (N,) true classes. logits: float N×C raw model outputs (never rescaled; the
    temperature is applied to them on the way to `probabilities`). examples: what was evaluated,
    for error analysis: an N×C×H×W image tensor, a list of N texts, or None.
    predictions: int64 (N,) argmax classes. probabilities: N×C softmax(logits / temperature).
    report: the ClassificationReport of predictions against labels.
    """

    labels: np.ndarray
    logits: np.ndarray
    class_names: list[str]
    examples: object = None
    temperature: float = 1.0
    predictions: np.ndarray = field(init=False, repr=False)
    probabilities: np.ndarray = field(init=False, repr=False)
    report: ClassificationReport = field(init=False, repr=False)

    def __post_init__(self):
        from scipy.special import softmax

        self.labels = check_class_labels("labels", self.labels)
        self.logits = check_finite("logits", np.asarray(self.logits, dtype=np.float64))
        if self.logits.ndim != 2 or self.labels.shape != (len(self.logits),):
            raise MtkitError(
                f"need N×C logits and N labels, got {self.logits.shape} and {self.labels.shape}"
            )
        check_positive("temperature", self.temperature)
        self.probabilities = softmax(self.logits / self.temperature, axis=1)
        # Dividing by a positive temperature never changes which class is largest.
        self.predictions = self.logits.argmax(axis=1)
        self.report = classification_report(self.labels, self.predictions, self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return self.report.accuracy

    @property
    def macro_f1(self) -> float:
        return self.report.macro_f1

    @property
    def correct(self) -> np.ndarray:
        """bool (N,): whether each prediction is right (its mean is the accuracy)."""
        return self.predictions == self.labels

    @property
    def confidence(self) -> np.ndarray:
        """float (N,): the probability the model gave its own prediction."""
        return self.probabilities.max(axis=1)

    @property
    def negative_log_likelihood(self) -> float:
        """Mean −log p(true class): what temperature scaling minimises (scikit-learn log_loss)."""
        from sklearn.metrics import log_loss

        return float(log_loss(self.labels, self.probabilities, labels=range(len(self.class_names))))

    @property
    def expected_calibration_error(self) -> float:
        """ECE with DEFAULT_BINS equal-width confidence bins (see `reliability_curve`)."""
        return reliability_curve(self.probabilities, self.labels).ece

    def with_temperature(self, temperature: float) -> Evaluation:
        """The same answers with probabilities softmax(logits / temperature): new probabilities,
        the same predictions and report."""
        return dataclasses.replace(self, temperature=temperature)

    def summary(self) -> str:
        """One line: accuracy, macro-F1, ECE and NLL."""
        return (
            f"accuracy {self.accuracy:.3f}, macro-F1 {self.macro_f1:.3f}, "
            f"ECE {self.expected_calibration_error:.3f}, NLL {self.negative_log_likelihood:.3f} "
            f"({len(self)} examples)"
        )


def model_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's raw outputs for N×... `inputs`: N×num_classes float32 on the CPU, computed
    in eval mode without gradients (the model's mode is kept).

    Unlike `mtkit.predict` (probabilities), logits keep what temperature scaling needs.
    """
    check_positive("batch_size", batch_size, integer=True)
    if len(inputs) == 0:
        raise MtkitError("nothing to evaluate: the inputs are empty")
    return forward_in_batches(
        model, inputs, batch_size=batch_size, fn=lambda batch: model(batch).float()
    )


def evaluate(
    model: nn.Module,
    data,
    *,
    tokenizer=None,
    max_length: int | None = None,
    temperature: float = 1.0,
    class_names=None,
    batch_size: int = 1024,
) -> Evaluation:
    """Run `model` (inputs → N×C logits) over labelled `data` and score its answers.

    data: an ImageDataset, a TextDataset (with the `tokenizer` the model was trained with; texts
        are encoded to `max_length` tokens, by default the model's own) or an (inputs, labels)
        tuple.
    temperature: divide the logits by this before the softmax (see `fit_temperature`).
    class_names: names for the classes when `data` has none (default "0", "1", ...).
    Returns an Evaluation with predictions, probabilities and a ClassificationReport.
    """
    check_positive("temperature", temperature)
    if class_names is not None:
        class_names = check_names("class_names", class_names)
    inputs, labels = labelled_inputs(data, model, tokenizer, max_length)
    logits = model_logits(model, inputs, batch_size).numpy()
    check_finite("the model's outputs (logits) on finite inputs", logits)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise MtkitError(f"the model must return N×C logits with C ≥ 2, got {logits.shape}")
    classes = logits.shape[1]
    class_names = list(
        class_names or getattr(data, "class_names", None) or map(str, range(classes))
    )
    if len(class_names) != classes:
        raise MtkitError(f"the model outputs {classes} classes but there are {len(class_names)}")
    if labels.min() < 0 or labels.max() >= classes:
        raise MtkitError(f"labels must lie in [0, {classes}) for a model with {classes} outputs")
    if hasattr(data, "texts"):
        examples = list(data.texts)
    elif inputs.is_floating_point() and inputs.dim() == 4:
        examples = inputs  # images
    else:
        examples = None
    return Evaluation(labels, logits, class_names, examples, float(temperature))


# ---------------------------------------------------------------------------------------------
# Error analysis.


@dataclass
class Mistake:
    """One wrong answer. index: position in the evaluated data; confidence: the probability the
    model gave its (wrong) prediction; example: the C×H×W image, the text, or None."""

    index: int
    true_class: str
    predicted_class: str
    confidence: float
    example: object = None


def confident_mistakes(evaluation: Evaluation, count: int = 12) -> list[Mistake]:
    """The `count` wrong predictions with the highest confidence, most confident first.

    These are worth reading one by one: some are the model's blind spots, others are label
    errors in the data (a confidently "wrong" answer can be the right one).
    """
    check_instance("evaluation", evaluation, Evaluation, "an Evaluation (from evaluate)")
    check_positive("count", count, integer=True)
    wrong = np.flatnonzero(~evaluation.correct)
    order = wrong[np.argsort(-evaluation.confidence[wrong], kind="stable")][:count]
    names = evaluation.class_names
    return [
        Mistake(
            index=int(i),
            true_class=names[evaluation.labels[i]],
            predicted_class=names[evaluation.predictions[i]],
            confidence=float(evaluation.confidence[i]),
            example=None if evaluation.examples is None else evaluation.examples[i],
        )
        for i in order
    ]


def mistakes_table(mistakes: list[Mistake], width: int = 90) -> str:
    """A plain-text table of mistakes: confidence, true class, predicted class, and the text
    (cut to `width` characters) when the examples are texts."""
    check_positive("width", width, integer=True)
    if not isinstance(mistakes, (list, tuple)) or not all(isinstance(m, Mistake) for m in mistakes):
        raise MtkitError(
            f"mistakes must be a list of Mistake (from confident_mistakes), got {shown(mistakes)}"
        )
    if not mistakes:
        return "no mistakes"
    true_width = max(len("true"), *(len(m.true_class) for m in mistakes))
    predicted_width = max(len("predicted"), *(len(m.predicted_class) for m in mistakes))
    lines = [f"{'conf.':>5}  {'true':<{true_width}}  {'predicted':<{predicted_width}}  example"]
    for mistake in mistakes:
        if isinstance(mistake.example, str):
            text = mistake.example
            example = text if len(text) <= width else text[: width - 1] + "…"
        else:
            example = f"#{mistake.index}"
        lines.append(
            f"{mistake.confidence:5.2f}  {mistake.true_class:<{true_width}}  "
            f"{mistake.predicted_class:<{predicted_width}}  {example}"
        )
    return "\n".join(lines)


@dataclass
class ClassErrors:
    """How often one class is misclassified, and what it is most often mistaken for."""

    name: str
    examples: int
    errors: int
    most_confused_with: str | None  # None when the class has no errors
    confused_count: int

    @property
    def error_rate(self) -> float:
        """errors / examples (1 − recall); NaN for a class with no examples."""
        return self.errors / self.examples if self.examples else math.nan


def class_errors(evaluation: Evaluation) -> list[ClassErrors]:
    """Per-class error rates, read off the confusion matrix, in class order."""
    check_instance("evaluation", evaluation, Evaluation, "an Evaluation (from evaluate)")
    confusion = evaluation.report.confusion
    rows = []
    for index, name in enumerate(evaluation.class_names):
        others = confusion[index].copy()
        others[index] = 0
        worst = int(others.argmax())
        rows.append(
            ClassErrors(
                name=name,
                examples=int(confusion[index].sum()),
                errors=int(others.sum()),
                most_confused_with=evaluation.class_names[worst] if others[worst] else None,
                confused_count=int(others[worst]),
            )
        )
    return rows


__all__ = [
    "DEFAULT_BINS",
    "ClassErrors",
    "ClassificationReport",
    "Evaluation",
    "Mistake",
    "ReliabilityCurve",
    "TemperatureScaled",
    "class_errors",
    "classification_report",
    "confident_mistakes",
    "embed",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "knn_accuracy",
    "linear_probe_accuracy",
    "masked_token_error",
    "masked_token_forgetting",
    "mistakes_table",
    "model_logits",
    "nearest_neighbours",
    "reliability_curve",
]
