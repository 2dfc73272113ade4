"""Bad values at the public boundary, class by class (issue 19), as a user would pass them.

1. Silent wrong results: NaN / ±inf inputs, labels that leave classes empty, sizes that make a
   number meaningless (k > examples, one bootstrap resample), repeated seeds, unreachable
   targets. Each must be an MtkitError, never a number computed from them.
2. Raw errors: wrong types that used to escape as AttributeError, TypeError, IndexError,
   UFuncTypeError, ... must be an MtkitError that names the argument.
3. What a PyTorch user passes and expects to work (NumPy arrays, datasets, string labels) works.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import torch

import mtkit as mt
from mtkit.core.utils import MtkitError
from mtkit.evaluation import metrics as E
from mtkit.evaluation import stats
from mtkit.experiments import LogisticRegressionBaseline, label_efficiency

# --- small shared inputs ---------------------------------------------------------------------


def images(count: int = 8, bad: float | None = None, where: int = 0) -> torch.Tensor:
    """count×1×8×8 images in [0, 1]; with `bad`, one pixel of image `where` set to it."""
    data = torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    if bad is not None:
        data[where, 0, 3, 3] = bad
    return data


def labels(count: int = 8) -> torch.Tensor:
    return torch.arange(count) % 2


def encoder():
    torch.manual_seed(0)
    return mt.DenseAutoencoder(hidden_sizes=(16,), latent_size=8).encoder


def classifier(num_classes: int = 2) -> mt.Classifier:
    return mt.Classifier(encoder(), num_classes)


@functools.cache
def digits():
    return mt.load_images("digits")


class Validation:
    """What fit_temperature reads of an Evaluation: logits and labels."""

    def __init__(self, logits, labels):
        self.logits, self.labels = np.asarray(logits), np.asarray(labels)


def nearly_ece_inputs():
    return np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 1])


# --- 1. silent wrong results: NaN and ±inf never reach a number -------------------------------

NON_FINITE = {
    "predict": lambda bad: mt.predict(classifier(), images(bad=bad)),
    "predict a dataset": lambda bad: mt.predict(
        classifier(), mt.ImageDataset(images(bad=bad), None, [])
    ),
    "evaluate_model": lambda bad: mt.evaluate_model(classifier(), (images(bad=bad), labels())),
    "detect_drift reference": lambda bad: mt.detect_drift(images(bad=bad), images(), encoder()),
    "detect_drift new": lambda bad: mt.detect_drift(images(), images(bad=bad, where=5), encoder()),
    "embed": lambda bad: E.embed(encoder(), images(bad=bad)),
    "knn_accuracy train": lambda bad: E.knn_accuracy(
        encoder(), (images(bad=bad), labels()), (images(), labels()), 3
    ),
    "linear_probe_accuracy test": lambda bad: E.linear_probe_accuracy(
        encoder(), (images(), labels()), (images(bad=bad), labels())
    ),
    "nearest_neighbours codes": lambda bad: E.nearest_neighbours(
        np.array([[1.0, 0.0], [bad, 1.0]]), np.ones((1, 2)), count=1
    ),
    "fit_temperature": lambda bad: mt.fit_temperature(Validation([[bad, 1.0], [0, 1]], [0, 1])),
    "Evaluation logits": lambda bad: E.Evaluation([0, 1], [[bad, 1.0], [0, 1]], ["a", "b"]),
    "fine_tune labelled": lambda bad: mt.fine_tune(
        classifier(), (images(bad=bad), labels()), epochs=1, progress=False
    ),
    "fine_tune validation": lambda bad: mt.fine_tune(
        classifier(), (images(), labels()), validation=(images(bad=bad), labels()), epochs=1
    ),
    "self_train pool": lambda bad: mt.self_train(
        classifier(), (images(), labels()), images(bad=bad), validation=(images(), labels())
    ),
}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("call", NON_FINITE.values(), ids=NON_FINITE.keys())
def test_non_finite_inputs_are_refused_not_turned_into_numbers(call, bad):
    with pytest.raises(MtkitError, match=r"must be finite, but \d+ value\(s\) are NaN and \d+ inf"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(bad)


class Diverged(torch.nn.Module):
    """A model whose weights went NaN: finite inputs, NaN outputs."""

    def forward(self, inputs):
        return torch.full((len(inputs), 2), math.nan)


def test_a_model_that_outputs_nan_is_an_error_not_an_accuracy():
    with pytest.raises(MtkitError, match="outputs .*must be finite"):
        mt.evaluate_model(Diverged(), (images(), labels()))
    with pytest.raises(MtkitError, match="probabilities .*must be finite"):
        mt.predict(Diverged(), images())


# --- 1. silent wrong results: labels, sizes, repeats, targets ---------------------------------

SILENT = {
    "from_tensors labels {3, 7}": (
        lambda: mt.ImageDataset.from_tensors(images(2), [3, 7]),
        r"labels \[3, 7\] leave classes \[0, 1, 2, 4, 5, 6\] without a single example.*"
        r"numpy.unique\(labels, return_inverse=True\).*num_classes=",
    ),
    "from_tensors labels {0, 2}": (
        lambda: mt.ImageDataset.from_tensors(images(2), np.array([0, 2])),
        r"leave classes \[1\]",
    ),
    "from_lists labels {3, 7}": (
        lambda: mt.TextDataset.from_lists(["a", "b"], [3, 7]),
        r"labels \[3, 7\] leave classes",
    ),
    "from_tensors num_classes too small": (
        lambda: mt.ImageDataset.from_tensors(images(2), [0, 7], num_classes=5),
        r"labels must be in \[0, 5\)",
    ),
    "from_tensors num_classes disagrees": (
        lambda: mt.ImageDataset.from_tensors(images(2), [0, 1], ["a", "b"], num_classes=3),
        "num_classes=3 but 2 class_names",
    ),
    "label_efficiency repeated seed": (
        lambda: label_efficiency(digits(), [LogisticRegressionBaseline()], [5], seeds=[0, 0]),
        r"seeds must be distinct, but \[0\] appear",
    ),
    "label_efficiency repeated labels_per_class": (
        lambda: label_efficiency(digits(), [LogisticRegressionBaseline()], [5, 5], seeds=[0]),
        r"labels_per_class must be distinct",
    ),
    "knn more neighbours than examples": (
        lambda: E.knn_accuracy(encoder(), (images(), labels()), (images(), labels()), 9),
        "neighbours=9 is more than the 8 training examples",
    ),
    "probe on one class": (
        lambda: E.linear_probe_accuracy(
            encoder(), (images(), torch.zeros(8, dtype=torch.long)), (images(), labels())
        ),
        "at least 2 classes",
    ),
    "nearest_neighbours more than there are": (
        lambda: E.nearest_neighbours(np.eye(3), np.eye(3)[:1], count=4),
        "count=4 is more than the 3 codes",
    ),
    "bootstrap_ci one resample": (
        lambda: stats.bootstrap_ci([1.0, 2.0, 3.0], resamples=1),
        "resamples must be an integer >= 1000, got 1",
    ),
    "bootstrap_ci 999 resamples": (
        lambda: stats.bootstrap_ci([1.0, 2.0, 3.0], resamples=999),
        "resamples must be an integer >= 1000",
    ),
    "ExitCriteria target NaN": (lambda: mt.ExitCriteria(target=math.nan), "target .*got nan"),
    "ExitCriteria target inf": (
        lambda: mt.ExitCriteria(target=math.inf, target_metric="val_loss"),
        "target .*got inf",
    ),
    "ExitCriteria accuracy above 1": (
        lambda: mt.ExitCriteria(target=95),
        r"target \(for val_accuracy\) .*\[0, 1\], got 95",
    ),
    "ExitCriteria negative loss": (
        lambda: mt.ExitCriteria(target=-0.1, target_metric="val_loss"),
        ">= 0, got -0.1",
    ),
    "ExitCriteria target True": (
        lambda: mt.ExitCriteria(target=True),
        "target must be a number or None",
    ),
    "classification_report negative label": (
        lambda: mt.classification_report([0, -1], [0, 1]),
        "labels must be >= 0",
    ),
    "classification_report label past class_names": (
        lambda: mt.classification_report([0, 3], [0, 1], class_names=["a", "b"]),
        r"labels must be in \[0, 2\)",
    ),
    "confidence above 1": (
        lambda: mt.TextDataset.from_lists(["a", "b"], confidence=[2.0, 0.5]),
        r"confidence must lie in \[0, 1\]",
    ),
    "class_names repeated": (
        lambda: mt.ImageDataset.from_tensors(images(2), [0, 1], class_names=["a", "a"]),
        r"class_names must be distinct, but \['a'\]",
    ),
    "class_names one string": (
        lambda: mt.ImageDataset.from_tensors(images(2), [0, 1], class_names="ab"),
        "class_names must be a list of names, got 'ab'",
    ),
    "few_labels test_indices that select nothing": (
        lambda: mt.few_labels(digits(), 5, test_indices=np.zeros(1797, dtype=bool)),
        "test_indices selects no example",
    ),
    "evaluate_model class_names one string": (
        lambda: mt.evaluate_model(classifier(), (images(), labels()), class_names="ab"),
        "class_names must be a list of names",
    ),
    "TextDataset of one string": (
        lambda: mt.TextDataset("abc", None, []),
        "texts must be a list of strings",
    ),
}


@pytest.mark.parametrize("call, message", SILENT.values(), ids=SILENT.keys())
def test_inputs_that_would_give_a_meaningless_number_are_refused(call, message):
    with pytest.raises(MtkitError, match=message):
        call()


# --- 2. wrong types: an MtkitError naming the argument, not a raw error from inside -----------

WRONG_TYPES = {
    "predict a list": (lambda: mt.predict(classifier(), [[0.0] * 64]), "expected a tensor"),
    "predict a string model": (
        lambda: mt.predict("model.pt", images()),
        "classifier must be a torch nn.Module",
    ),
    "predict integer pixels": (
        lambda: mt.predict(classifier(), (images() * 255).long()),
        r"inputs must be float images N×C×H×W .*got torch.int64 .*divide 0..255",
    ),
    "predict a class": (
        lambda: mt.predict(mt.Classifier, images()),
        r"got type \(the class itself",
    ),
    "classification_report names and indices mixed": (
        lambda: mt.classification_report(["cat", 1], [0, 1]),
        "labels must be all class indices",
    ),
    "classification_report float labels": (
        lambda: mt.classification_report([0.5, 1.0], [0, 1]),
        r"labels must be integers .*float64 \(convert with .astype\(int\)\)",
    ),
    "classification_report NaN label": (
        lambda: mt.classification_report([0, math.nan], [0, 1]),
        "labels must be integers",
    ),
    "classification_report unknown name": (
        lambda: mt.classification_report(["cat", "dog"], ["cat", "cow"], ["cat", "dog"]),
        r"predictions \['cow'\] are not among class_names",
    ),
    "classification_report one label": (
        lambda: mt.classification_report(3, 3),
        "labels must be a 1-D sequence",
    ),
    "confident_mistakes of a list": (
        lambda: mt.confident_mistakes([0.9, 0.1]),
        "evaluation must be an Evaluation",
    ),
    "class_errors of None": (lambda: mt.class_errors(None), "evaluation must be an Evaluation"),
    "mistakes_table of a number": (
        lambda: mt.mistakes_table(3),
        "mistakes must be a list of Mistake",
    ),
    "expected_calibration_error of text": (
        lambda: mt.expected_calibration_error("probabilities", [0]),
        "probabilities must be an N×C array of numbers",
    ),
    "fit_temperature float labels": (
        lambda: mt.fit_temperature(Validation([[0.0, 1.0], [0, 1]], [0.5, 1.0])),
        "validation.labels must be integers",
    ),
    "fit_temperature label past the logits": (
        lambda: mt.fit_temperature(Validation([[0.0, 1.0], [0, 1]], [0, 5])),
        r"validation.labels must be in \[0, 2\)",
    ),
    "TemperatureScaled of a string": (
        lambda: mt.TemperatureScaled("model", 1.5),
        "model must be a torch nn.Module",
    ),
    "detect_drift alpha as text": (
        lambda: mt.detect_drift(images(), images(), encoder(), alpha="5%"),
        r"alpha must be a finite number in \(0, 1\), got '5%'",
    ),
    "detect_drift encoder a string": (
        lambda: mt.detect_drift(images(), images(), "encoder.pt"),
        "encoder must be a torch",
    ),
    "detect_drift negative seed": (
        lambda: mt.detect_drift(images(), images(), encoder(), seed=-1),
        "seed must be",
    ),
    "detect_drift integer images": (
        lambda: mt.detect_drift(images().long(), images(), encoder()),
        r"reference must be a non-empty float N×C×H×W",
    ),
    "nearest_neighbours widths differ": (
        lambda: E.nearest_neighbours(np.ones((3, 2)), np.ones((1, 3)), count=1),
        "must have the same D",
    ),
    "nearest_neighbours text": (
        lambda: E.nearest_neighbours("codes", np.ones((1, 3))),
        "codes must be an N×D array",
    ),
    "fine_tune dropout as text": (
        lambda: mt.fine_tune(classifier(), (images(), labels()), dropout="0.1"),
        r"dropout must be a finite number in \[0, 1\), got '0.1'",
    ),
    "fine_tune lr_decay as text": (
        lambda: mt.fine_tune(classifier(), (images(), labels()), lr_decay="half"),
        "lr_decay must be a finite number",
    ),
    "fine_tune batch_size as text": (
        lambda: mt.fine_tune(classifier(), (images(), labels()), batch_size="32", epochs=1),
        "batch_size must be a positive integer",
    ),
    "fine_tune validation labels out of range": (
        lambda: mt.fine_tune(
            classifier(), (images(), labels()), validation=(images(), labels() + 4)
        ),
        r"validation labels must lie in \[0, 2\), got labels 4..5",
    ),
    "fine_tune integer pixels": (
        lambda: mt.fine_tune(classifier(), ((images() * 255).long(), labels()), epochs=1),
        "labelled inputs must be float images",
    ),
    "fine_tune raw texts": (
        lambda: mt.fine_tune(classifier(), mt.TextDataset.from_lists(["a b", "c"], [0, 1])),
        r"labelled holds raw texts: .*tensors_for\(tokenizer\)",
    ),
    "fine_tune nothing": (lambda: mt.fine_tune(classifier(), None), "expected a tensor"),
    "from_lists one int label": (
        lambda: mt.TextDataset.from_lists(["a", "b"], 3),
        "labels must be a list of N labels",
    ),
    "from_lists confidence as text": (
        lambda: mt.TextDataset.from_lists(["a", "b"], confidence=["high", "low"]),
        r"confidence must be numbers in \[0, 1\]",
    ),
    "from_tensors name a number": (
        lambda: mt.ImageDataset.from_tensors(images(2), name=3),
        "name must be a non-empty",
    ),
    "dataset index a float": (lambda: digits()[1.5], "index must be an integer, a slice"),
    "dataset index a string": (lambda: digits()["first"], "index must be an integer"),
    "few_labels test_indices out of range": (
        lambda: mt.few_labels(digits(), 5, test_indices=[5000]),
        r"test_indices must be positions in \[0, 1797\)",
    ),
    "label_efficiency one seed as a number": (
        lambda: label_efficiency(digits(), [LogisticRegressionBaseline()], [5], seeds=3),
        r"seeds must be a list of integers such as \[0, 1, 2\], got 3",
    ),
    "label_efficiency labels_per_class a number": (
        lambda: label_efficiency(digits(), [LogisticRegressionBaseline()], 5, seeds=[0]),
        "labels_per_class must be a list of integers",
    ),
    "label_efficiency a method class": (
        lambda: label_efficiency(digits(), [LogisticRegressionBaseline], [5], seeds=[0]),
        r"methods must be instances: LogisticRegressionBaseline\(\), not the class",
    ),
    "label_efficiency one method": (
        lambda: label_efficiency(digits(), LogisticRegressionBaseline(), [5], seeds=[0]),
        "methods must be a list of methods",
    ),
    "evaluate_model temperature as text": (
        lambda: mt.evaluate_model(classifier(), (images(), labels()), temperature="warm"),
        "temperature must be a positive number, got 'warm'",
    ),
    "masked_token_error mask_rate as text": (
        lambda: mt.masked_token_error(
            mt.MaskedTokenModel(mt.TextEncoder(vocab_size=9, max_length=8, width=8, heads=2)),
            torch.ones(2, 4, dtype=torch.long),
            mask_rate="15%",
        ),
        r"mask_rate must be a finite number in \(0, 1\)",
    ),
    "summarize of None": (
        lambda: mt.experiments.summarize(None),
        "expected a LabelEfficiencyTable, got NoneType",
    ),
    "forgetting of a string classifier": (
        lambda: mt.forgetting(mt.DenseAutoencoder(), "classifier.pt", images()),
        "classifier must be a torch nn.Module",
    ),
    "shifted_split of None": (
        lambda: mt.evaluation.drift.shifted_split(None),
        "split must be a FewLabelSplit",
    ),
    "ExitCriteria monitor a number": (
        lambda: mt.ExitCriteria(monitor=3),
        "monitor must be a non-empty string",
    ),
}


@pytest.mark.parametrize("call, message", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_types_get_an_error_that_names_the_argument(call, message):
    with pytest.raises(MtkitError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        call()


# --- what a PyTorch or scikit-learn user passes, and expects to work ---------------------------


def test_predict_takes_arrays_and_datasets_as_it_takes_tensors():
    model, data = classifier(), images()
    expected = mt.predict(model, data)
    assert torch.allclose(mt.predict(model, data.numpy()), expected)
    dataset = mt.ImageDataset.from_tensors(data, labels())
    assert torch.allclose(mt.predict(model, dataset), expected)
    assert torch.allclose(mt.predict(model, (data, labels())), expected)


def test_predict_encodes_a_text_dataset_with_its_tokenizer():
    tokenizer = mt.Tokenizer.fit(["the cat sat", "a dog ran"], min_freq=1)
    torch.manual_seed(0)
    text_model = mt.Classifier(
        mt.TextEncoder(vocab_size=len(tokenizer), max_length=8, width=8, heads=2), 2
    )
    texts = mt.TextDataset.from_lists(["the cat", "a dog ran"])
    probabilities = mt.predict(text_model, texts, tokenizer=tokenizer)
    assert torch.allclose(probabilities, mt.predict(text_model, tokenizer.encode(texts.texts, 8)))


def test_labels_with_empty_classes_are_fine_when_the_classes_are_said():
    counted = mt.ImageDataset.from_tensors(images(2), [3, 7], num_classes=8)
    named = mt.ImageDataset.from_tensors(images(2), [3, 7], class_names=list("abcdefgh"))
    assert counted.num_classes == named.num_classes == 8 and counted.class_names[7] == "7"
    remapped = np.unique([3, 7], return_inverse=True)[1]  # the fix the error suggests
    assert mt.ImageDataset.from_tensors(images(2), remapped).num_classes == 2
    assert mt.TextDataset.from_lists(["a", "b"], [3, 7], num_classes=8).num_classes == 8


def test_classification_report_reads_class_names_as_labels():
    report = mt.classification_report(["cat", "dog", "dog"], ["cat", "cat", "dog"])
    assert report.class_names == ["cat", "dog"] and report.accuracy == pytest.approx(2 / 3)
    named = mt.classification_report(["dog"], ["dog"], class_names=["cat", "dog"])
    assert named.support.tolist() == [0, 1]


def test_evaluation_and_drift_take_numpy_arrays():
    model = classifier()
    from_arrays = mt.evaluate_model(model, (images().numpy(), labels().numpy()))
    assert from_arrays.accuracy == mt.evaluate_model(model, (images(), labels())).accuracy
    report = mt.detect_drift(images().numpy(), images(8).numpy(), encoder(), permutations=20)
    assert report.p_value == 1.0  # the same images: no drift
    ExitCriteria = mt.ExitCriteria
    assert ExitCriteria(target=0.9).target == 0.9
    assert ExitCriteria(target=np.float64(0.02), target_metric="val_loss").target == 0.02


def test_identical_sets_show_no_drift_instead_of_a_nan_mmd():
    same = np.ones((4, 2))
    mmd, p_value = mt.evaluation.drift.mmd_permutation_test(same, same, permutations=50)
    assert (mmd, p_value) == (0.0, 1.0)
    flat = torch.full((6, 1, 8, 8), 0.5)
    assert not mt.detect_drift(flat, flat.clone(), encoder(), permutations=50).drifted


def test_numpy_integers_count_as_integers():
    split = mt.few_labels(digits(), np.int64(2), seed=np.int64(1), test_size=np.float64(0.2))
    assert len(split.labelled) == 20
