"""Evaluation: how good is a model, where does it fail, can its confidence be trusted, what did
fine-tuning cost it, and how good are an encoder's features?

    result = evaluate(classifier, split.test)          # images, texts (with tokenizer=) or tuples
    print(result.report)                               # accuracy, macro-F1, per-class P/R/F1
    confident_mistakes(result, 12)                     # the wrong answers it was surest of
    temperature = fit_temperature(evaluate(classifier, split.validation))
    calibrated = result.with_temperature(temperature)  # same predictions, honest probabilities

Representation quality is measured the way papers do it: freeze the encoder, embed the data, and
see how well a simple classifier (k nearest neighbours, or a logistic regression "linear probe")
does on those features with the few labels we have. Better features → higher probe accuracy.

Standard metrics come from scikit-learn; what it lacks for multi-class neural networks (expected
calibration error, temperature scaling) is written out here. Statistics over seeds live in
mtkit/stats.py; the figures in mtkit/evaluation_plots.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from mtkit.core.utils import MtkitError, check_positive
from mtkit.evaluation.stats import (
    compare,
)  # re-exported: comparing methods is part of evaluating them
from mtkit.stages.finetune import Forgetting

DEFAULT_BINS = 15  # reliability bins, as in Guo et al. (2017), "On calibration of modern NNs"
DEFAULT_MAX_LENGTH = 48  # TextDataset.tensors_for's default

# ---------------------------------------------------------------------------------------------
# Inputs: images, texts and (inputs, labels) tuples all become tensors the same way.


def _max_length(model: nn.Module | None) -> int:
    """The token length a text model was built for (its config), else DEFAULT_MAX_LENGTH."""
    for part in (model, getattr(model, "encoder", None)):
        config = getattr(part, "config", None)
        if hasattr(config, "max_length"):
            return config.max_length
    return DEFAULT_MAX_LENGTH


def _inputs_and_labels(data, need_labels: bool = True, tokenizer=None, max_length=None):
    """(inputs tensor, labels array or None) from a tensor, a tuple, or a dataset.

    A TextDataset needs the tokenizer its model was trained with; it is encoded to N×max_length
    token ids (max_length defaults to 48, TextDataset.tensors_for's default).
    """
    inputs = labels = None
    if isinstance(data, torch.Tensor):
        inputs = data
    elif hasattr(data, "texts"):
        if tokenizer is None:
            raise MtkitError(
                "texts need the tokenizer their model was trained with: pass tokenizer=... "
                "(e.g. pretrained.tokenizer)"
            )
        encoded = data.tensors_for(tokenizer, max_length=max_length or DEFAULT_MAX_LENGTH)
        inputs, labels = encoded[0], (encoded[1] if len(encoded) > 1 else None)
    elif isinstance(data, (tuple, list)) and data:
        inputs, labels = data[0], (data[1] if len(data) > 1 else None)
    elif hasattr(data, "tensors"):
        inputs, labels = data.tensors[0], getattr(data, "labels", None)
    if not isinstance(inputs, torch.Tensor):
        raise MtkitError(
            f"expected a tensor, an (inputs, labels) tuple or a dataset, got {type(data).__name__}"
            " (encode texts first: dataset.tensors_for(tokenizer), or pass a TextDataset and"
            " tokenizer=...)"
        )
    if need_labels and labels is None:
        raise MtkitError("this needs a labelled dataset; the unlabelled pool has no labels")
    if labels is not None and len(labels) != len(inputs):
        raise MtkitError(f"{len(inputs)} inputs but {len(labels)} labels")
    return inputs, None if labels is None else np.asarray(labels)


# ---------------------------------------------------------------------------------------------
# Representation quality: probes on frozen features.


@torch.no_grad()
def embed(
    encoder: nn.Module, inputs, batch_size: int = 1024, *, tokenizer=None, max_length=None
) -> np.ndarray:
    """Run a frozen encoder over every input: N×... → N×feature_size NumPy array.

    inputs: a tensor, an (inputs, labels) tuple, an image dataset, or a TextDataset with
    `tokenizer` (labels are never used).
    """
    check_positive("batch_size", batch_size, integer=True)
    max_length = max_length or _max_length(encoder)
    tensor = _inputs_and_labels(inputs, False, tokenizer, max_length)[0]
    if len(tensor) == 0:
        raise MtkitError("nothing to embed: the inputs are empty")
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    chunks = [
        encoder(tensor[start : start + batch_size].to(device)).cpu()
        for start in range(0, len(tensor), batch_size)
    ]
    encoder.train(was_training)
    return torch.cat(chunks).numpy()


def _probe_data(encoder, train, test, tokenizer):
    """Standardised train and test codes and their labels."""
    max_length = _max_length(encoder)
    train_codes, test_codes = _standardised(
        embed(encoder, train, tokenizer=tokenizer, max_length=max_length),
        embed(encoder, test, tokenizer=tokenizer, max_length=max_length),
    )
    train_labels = _inputs_and_labels(train, tokenizer=tokenizer, max_length=max_length)[1]
    test_labels = _inputs_and_labels(test, tokenizer=tokenizer, max_length=max_length)[1]
    return train_codes, train_labels, test_codes, test_labels


def knn_accuracy(encoder: nn.Module, train, test, neighbours: int = 5, *, tokenizer=None) -> float:
    """Accuracy of k-nearest-neighbours on the encoder's standardised features.

    train, test: labelled datasets (TextDatasets with `tokenizer`) or (inputs, labels) tuples.
    Returns a float in [0, 1].
    """
    neighbours = min(check_positive("neighbours", neighbours, integer=True), len(train))
    train_codes, train_labels, test_codes, test_labels = _probe_data(
        encoder, train, test, tokenizer
    )
    model = KNeighborsClassifier(n_neighbors=neighbours).fit(train_codes, train_labels)
    return float(model.score(test_codes, test_labels))


def linear_probe_accuracy(
    encoder: nn.Module, train, test, regularisation: float = 1.0, *, tokenizer=None
) -> float:
    """Accuracy of a logistic regression trained on the frozen encoder's standardised features.

    regularisation: scikit-learn's C (smaller = stronger L2 penalty). Returns a float in [0, 1].
    """
    check_positive("regularisation", regularisation)
    train_codes, train_labels, test_codes, test_labels = _probe_data(
        encoder, train, test, tokenizer
    )
    model = LogisticRegression(C=regularisation, max_iter=2000)
    model.fit(train_codes, train_labels)
    return float(model.score(test_codes, test_labels))


def _standardised(train_codes: np.ndarray, test_codes: np.ndarray):
    scaler = StandardScaler().fit(train_codes)
    return scaler.transform(train_codes), scaler.transform(test_codes)


def nearest_neighbours(codes: np.ndarray, queries: np.ndarray, count: int = 3) -> np.ndarray:
    """Indices of the `count` rows of `codes` (N×D) most similar (cosine) to each query (Q×D).

    Returns a Q×count integer array, most similar first.
    """
    check_positive("count", count, integer=True)
    codes = codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return np.argsort(-(queries @ codes.T), axis=1)[:, :count]


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

    labels, predictions: N class indices each. class_names: one name per class (default "0",
    "1", ...; the number of classes is then the largest index + 1). A class that is never
    predicted gets precision 0 (scikit-learn's zero_division=0), not an error.
    """
    from sklearn import metrics

    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1 or len(labels) == 0:
        raise MtkitError(
            f"labels and predictions must be two 1-D arrays of the same, non-zero length; "
            f"got shapes {labels.shape} and {predictions.shape}"
        )
    if class_names is None:
        class_names = [str(c) for c in range(int(max(labels.max(), predictions.max())) + 1)]
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

        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.logits = np.asarray(self.logits, dtype=np.float64)
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


@torch.no_grad()
def model_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's raw outputs for every input: N×num_classes float32 on the CPU, in eval mode.

    Unlike `mtkit.predict` (probabilities), logits keep what temperature scaling needs.
    """
    check_positive("batch_size", batch_size, integer=True)
    if len(inputs) == 0:
        raise MtkitError("nothing to evaluate: the inputs are empty")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = [
        model(inputs[start : start + batch_size].to(device)).float().cpu()
        for start in range(0, len(inputs), batch_size)
    ]
    model.train(was_training)
    return torch.cat(chunks)


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
    max_length = max_length or _max_length(model)
    inputs, labels = _inputs_and_labels(data, True, tokenizer, max_length)
    logits = model_logits(model, inputs, batch_size).numpy()
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


# ---------------------------------------------------------------------------------------------
# Calibration: does 80% confidence mean 80% right?


@dataclass
class ReliabilityCurve:
    """Predictions grouped by confidence into equal-width bins over [0, 1].

    edges: (bins + 1,) bin edges; bin k holds confidences in (edges[k], edges[k + 1]].
    confidence, accuracy: (bins,) mean confidence and accuracy in each bin (NaN where empty).
    counts: (bins,) predictions per bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: Σ_bins (count / N) · |accuracy − confidence|."""
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.counts[filled] * gaps) / self.counts.sum())


def _check_probabilities(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2 or len(probabilities) == 0:
        raise MtkitError(
            f"probabilities must be an N×C array with C ≥ 2, got {probabilities.shape}"
        )
    if labels.shape != (len(probabilities),):
        raise MtkitError(f"labels must have shape ({len(probabilities)},), got {labels.shape}")
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0:
        raise MtkitError("probabilities must be finite and non-negative")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise MtkitError("each row of probabilities must sum to 1 (pass softmax outputs)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise MtkitError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise MtkitError(f"labels must lie in [0, {probabilities.shape[1]})")
    return probabilities, labels


def reliability_curve(probabilities, labels, bins: int = DEFAULT_BINS) -> ReliabilityCurve:
    """Bin predictions by confidence (the top probability) and compare each bin's accuracy with
    its mean confidence. A calibrated model has accuracy ≈ confidence in every bin.

    probabilities: N×C (rows sum to 1); labels: N class indices. Returns a ReliabilityCurve.
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    check_positive("bins", bins, integer=True)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin k holds (edges[k], edges[k + 1]]; searching the edges themselves keeps a confidence
    # of exactly 0.6 in the bin that ends at 0.6, whatever the rounding of 0.6 × bins.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become NaN on purpose
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    return ReliabilityCurve(edges, mean_confidence, accuracy, counts)


def expected_calibration_error(probabilities, labels, bins: int = DEFAULT_BINS) -> float:
    """ECE: the average gap between confidence and accuracy, weighted by how many predictions
    fall in each confidence bin. 0 is perfect; an over-confident model scores high."""
    return reliability_curve(probabilities, labels, bins).ece


TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(validation: Evaluation) -> float:
    """The temperature T that makes softmax(logits / T) best match the labels of *validation*
    data (lowest negative log-likelihood). Never fit it on the test data you report.

    T > 1 softens over-confident probabilities, T < 1 sharpens timid ones; predictions do not
    change. The NLL is convex in 1/T, so a bounded 1-D search over log T finds the optimum
    within TEMPERATURE_RANGE. Apply it with `evaluation.with_temperature(T)`,
    `evaluate(..., temperature=T)` or `TemperatureScaled(model, T)`.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    if not isinstance(validation, Evaluation):
        raise MtkitError(
            "fit_temperature takes the Evaluation of validation data: "
            "fit_temperature(evaluate(model, split.validation))"
        )
    logits, labels = validation.logits.astype(np.float64), validation.labels
    rows = np.arange(len(labels))

    def nll(log_temperature: float) -> float:
        return float(-log_softmax(logits / math.exp(log_temperature), axis=1)[rows, labels].mean())

    low, high = (math.log(bound) for bound in TEMPERATURE_RANGE)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


class TemperatureScaled(nn.Module):
    """model(x) / temperature: a calibrated model to use like the original (`mt.predict`, save).

    forward(inputs) returns N×C logits whose softmax is the calibrated probabilities.
    """

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        check_positive("temperature", temperature)
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs) / self.temperature


# ---------------------------------------------------------------------------------------------
# Forgetting for text: the masked-token loss before and after fine-tuning.


def _relative_change(before: nn.Module, after: nn.Module) -> float:
    """‖w_after − w_before‖ / ‖w_before‖ over all parameters of two same-shaped modules."""
    before_weights, after_weights = dict(before.named_parameters()), dict(after.named_parameters())
    shapes = {name: tuple(p.shape) for name, p in before_weights.items()}
    if shapes != {name: tuple(p.shape) for name, p in after_weights.items()}:
        raise MtkitError("the classifier's encoder does not have the pretrained encoder's shape")
    moved = sum(
        (after_weights[name].detach().cpu() - weight.detach().cpu()).pow(2).sum()
        for name, weight in before_weights.items()
    )
    size = sum(weight.detach().cpu().pow(2).sum() for weight in before_weights.values())
    return float(torch.sqrt(moved) / torch.sqrt(size))


def _masked_model_and_tokenizer(pretrained, tokenizer):
    """Accept a PretrainedText (model + tokenizer) or a bare MaskedTokenModel."""
    if hasattr(pretrained, "model") and hasattr(pretrained, "tokenizer"):
        return pretrained.model, tokenizer or pretrained.tokenizer
    if not hasattr(pretrained, "loss") or not hasattr(pretrained, "encoder"):
        raise MtkitError(
            "expected the masked-token model: a PretrainedText or a MaskedTokenModel, "
            f"got {type(pretrained).__name__}"
        )
    return pretrained, tokenizer


@torch.no_grad()
def masked_token_error(
    pretrained,
    data,
    *,
    tokenizer=None,
    mask_rate: float = 0.15,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """Mean cross-entropy of restoring hidden tokens: the text model's pretraining loss.

    pretrained: a PretrainedText or a MaskedTokenModel. data: N×L token ids, a TextDataset (with
    `tokenizer`, taken from a PretrainedText by default) or an (ids, labels) tuple.
    Tokens are hidden with BERT's scheme at `mask_rate`, with a fixed `seed`, so two models
    scored with the same seed face exactly the same blanks. Lower is better.
    """
    from mtkit.models.text import mask_tokens

    model, tokenizer = _masked_model_and_tokenizer(pretrained, tokenizer)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("seed", seed, integer=True, allow_zero=True)
    config = model.encoder.config
    ids = _inputs_and_labels(data, False, tokenizer, config.max_length)[0]
    if ids.dtype != torch.long or ids.dim() != 2 or len(ids) == 0:
        raise MtkitError(f"expected N×L int64 token ids, got {tuple(ids.shape)} {ids.dtype}")
    mask_id = tokenizer.mask_id if tokenizer is not None else 2  # the Tokenizer's fixed id
    inputs, targets = mask_tokens(
        ids,
        mask_id=mask_id,
        vocab_size=config.vocab_size,
        rate=mask_rate,
        generator=torch.Generator().manual_seed(seed),
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, hidden = 0.0, 0
    for start in range(0, len(ids), batch_size):
        batch_targets = targets[start : start + batch_size].to(device)
        count = int((batch_targets != -100).sum())
        if count:  # model.loss averages over the hidden positions of its batch
            loss, _ = model.loss(inputs[start : start + batch_size].to(device), batch_targets)
            total += float(loss) * count
            hidden += count
    model.train(was_training)
    if hidden == 0:
        raise MtkitError("no token was hidden: the texts are empty or mask_rate is too small")
    return total / hidden


def masked_token_forgetting(
    pretrained, classifier: nn.Module, data, *, tokenizer=None, mask_rate: float = 0.15, seed=0
) -> Forgetting:
    """How far fine-tuning moved a text encoder away from its masked-token pretraining.

    pretrained: the PretrainedText (or MaskedTokenModel) the classifier's encoder was copied
        from; left untouched. classifier: a Classifier whose encoder has the same architecture.
    data: texts to score (e.g. the test TextDataset; labels unused).
    Returns mtkit's Forgetting with before/after = masked-token cross-entropy of the pretrained
    model and of the same model with the fine-tuned encoder put in (the output layer shares the
    token embeddings, so it uses the fine-tuned ones), and the encoder's relative weight change.
    The text counterpart of `mtkit.forgetting` (reconstruction error) for autoencoders.
    """
    model, tokenizer = _masked_model_and_tokenizer(pretrained, tokenizer)
    if not hasattr(classifier, "encoder"):
        raise MtkitError("expected a Classifier (an encoder with a head)")
    weight_change = _relative_change(model.encoder, classifier.encoder)
    after_model = copy.deepcopy(model)
    after_model.encoder = copy.deepcopy(classifier.encoder).to(next(model.parameters()).device)
    options = dict(tokenizer=tokenizer, mask_rate=mask_rate, seed=seed)
    return Forgetting(
        before=masked_token_error(model, data, **options),
        after=masked_token_error(after_model, data, **options),
        weight_change=weight_change,
    )


__all__ = [
    "ClassErrors",
    "ClassificationReport",
    "Evaluation",
    "Mistake",
    "ReliabilityCurve",
    "TemperatureScaled",
    "class_errors",
    "classification_report",
    "compare",
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
