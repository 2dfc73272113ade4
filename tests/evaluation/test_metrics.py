import copy

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from sklearn import metrics as sk_metrics
from torch import nn

import mtkit as mt
from mtkit.core.utils import MtkitError
from mtkit.evaluation.metrics import (
    Evaluation,
    TemperatureScaled,
    class_errors,
    classification_report,
    confident_mistakes,
    embed,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    knn_accuracy,
    linear_probe_accuracy,
    masked_token_error,
    masked_token_forgetting,
    mistakes_table,
    reliability_curve,
)


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
    from mtkit.evaluation.metrics import nearest_neighbours

    codes = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
    assert nearest_neighbours(codes, np.array([[2.0, 0.1]]), count=2).tolist() == [[0, 2]]


def test_probes_accept_tuples():
    train, test = _blobs(40, 0), _blobs(40, 1)
    assert knn_accuracy(Identity(), train.tensors, test.tensors) == 1.0
    with pytest.raises(MtkitError, match="encode texts first"):
        embed(Identity(), ["a text"])


# --- metrics and evaluate --------------------------------------------------------------------


def test_classification_report_equals_scikit_learn_on_random_inputs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    # Class 3 is never predicted: its precision must come out 0, as in scikit-learn.
    predictions = np.where(rng.random(200) < 0.6, np.minimum(labels, 2), rng.integers(0, 3, 200))
    report = classification_report(labels, predictions, ["a", "b", "c", "d"])
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        labels, predictions, zero_division=0
    )
    assert report.accuracy == pytest.approx(sk_metrics.accuracy_score(labels, predictions))
    assert report.macro_f1 == pytest.approx(
        sk_metrics.f1_score(labels, predictions, average="macro")
    )
    np.testing.assert_allclose(report.precision, precision)
    np.testing.assert_allclose(report.recall, recall)
    np.testing.assert_allclose(report.f1, f1)
    np.testing.assert_array_equal(report.support, support)
    np.testing.assert_array_equal(
        report.confusion, sk_metrics.confusion_matrix(labels, predictions)
    )
    assert report.precision[3] == 0.0 and report.recall[3] == 0.0
    assert "d" in str(report)


class Linear(nn.Module):
    """A fixed linear classifier on flattened inputs."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, inputs):
        return inputs.flatten(1) @ self.weight


def test_evaluate_a_model_on_images_and_on_tuples():
    data = _blobs(60, 0)
    model = Linear(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)))
    result = evaluate(model, data, class_names=None)
    logits = model(data.images).detach().numpy()
    np.testing.assert_array_equal(result.predictions, logits.argmax(1))
    np.testing.assert_allclose(result.probabilities, torch.softmax(torch.tensor(logits), 1), 1e-5)
    assert result.accuracy == pytest.approx(np.mean(logits.argmax(1) == data.labels.numpy()))
    assert result.class_names == ["0", "1"] and result.examples.shape == (60, 1, 2, 2)
    on_tuple = evaluate(model, data.tensors, class_names=["x", "y"])
    np.testing.assert_array_equal(on_tuple.predictions, result.predictions)
    assert on_tuple.report.class_names == ["x", "y"]


def _texts():
    texts = ["good great fine", "great good", "bad awful", "awful bad poor", "fine good", "poor"]
    return mt.TextDataset.from_lists(texts, [1, 1, 0, 0, 1, 0], ["negative", "positive"])


def _text_model(tokenizer):
    torch.manual_seed(0)
    encoder = mt.TextEncoder(
        vocab_size=tokenizer.vocab_size, max_length=8, width=8, depth=1, heads=2
    )
    return mt.Classifier(encoder, 2)


def test_evaluate_texts_with_their_tokenizer():
    texts = _texts()
    tokenizer = mt.Tokenizer.fit(texts.texts, min_freq=1)
    model = _text_model(tokenizer)
    result = evaluate(model, texts, tokenizer=tokenizer)
    ids = tokenizer.encode(texts.texts, max_length=8)  # the encoder's own max_length
    expected = torch.softmax(model.eval()(ids), 1).detach().numpy()
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert result.examples == texts.texts and result.class_names == texts.class_names
    assert len(embed(model.encoder, texts, tokenizer=tokenizer)) == len(texts)
    # 6 texts in 8 dimensions are separable: a probe scored on its own training texts fits them.
    assert linear_probe_accuracy(model.encoder, texts, texts, tokenizer=tokenizer) == 1.0
    with pytest.raises(MtkitError, match="tokenizer"):
        evaluate(model, texts)


def test_evaluate_rejects_what_it_cannot_score():
    data = _blobs(10, 0)
    model = Linear(torch.zeros(4, 3))
    with pytest.raises(MtkitError, match="labelled"):
        evaluate(model, data.without_labels())
    with pytest.raises(MtkitError, match="3 classes"):
        evaluate(model, data, class_names=["a", "b"])
    with pytest.raises(MtkitError, match=r"lie in \[0, 2\)"):
        evaluate(Linear(torch.zeros(4, 2)), (data.images, torch.full((10,), 2)))


# --- error analysis --------------------------------------------------------------------------


def _evaluation(logits, labels, examples=None, names=("cat", "dog", "eel")):
    return Evaluation(np.asarray(labels), np.asarray(logits, dtype=float), list(names), examples)


def test_confident_mistakes_are_the_wrong_answers_sorted_by_confidence():
    logits = [[5, 0, 0], [0, 1, 0], [0, 0, 9], [3, 0, 0], [0, 2, 0]]
    texts = ["sure right", "unsure wrong", "very sure wrong", "sure wrong", "x" * 200]
    result = _evaluation(logits, [0, 0, 1, 2, 1], texts)
    mistakes = confident_mistakes(result, count=5)
    assert [m.index for m in mistakes] == [2, 3, 1]
    assert (mistakes[0].true_class, mistakes[0].predicted_class) == ("dog", "eel")
    assert mistakes[0].confidence == pytest.approx(result.probabilities[2].max())
    table = mistakes_table(mistakes)
    assert table.splitlines()[1].endswith("very sure wrong") and len(table.splitlines()) == 4
    assert len(confident_mistakes(result, count=1)) == 1


def test_class_errors_read_the_confusion_matrix():
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 5
    rows = class_errors(_evaluation(logits, [0, 0, 0, 1, 2, 2]))
    assert [(r.name, r.examples, r.errors) for r in rows] == [
        ("cat", 3, 2),
        ("dog", 1, 0),
        ("eel", 2, 1),
    ]
    assert rows[0].most_confused_with == "dog" and rows[0].error_rate == pytest.approx(2 / 3)
    assert rows[1].most_confused_with is None


# --- calibration -----------------------------------------------------------------------------


def _sampled(count, seed, sharpen=1.0, classes=4):
    """Logits z and labels drawn from softmax(z): a perfectly calibrated predictor. `sharpen`
    multiplies the logits, so sharpen > 1 gives an over-confident one."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(count, classes))
    probabilities = torch.softmax(torch.tensor(logits), 1).numpy()
    labels = (rng.random((count, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)  # inverse CDF
    return Evaluation(labels, sharpen * logits, [str(c) for c in range(classes)])


def test_ece_is_near_zero_when_calibrated_and_large_when_over_confident():
    calibrated, over_confident = _sampled(20_000, 0), _sampled(20_000, 0, sharpen=3.0)
    assert calibrated.expected_calibration_error < 0.02
    assert over_confident.expected_calibration_error > 0.15
    assert expected_calibration_error(calibrated.probabilities, calibrated.labels) == pytest.approx(
        calibrated.expected_calibration_error
    )


def test_reliability_curve_by_hand():
    # Three predictions at confidence 0.65 (two right), one at 0.85 (right).
    probabilities = np.array([[0.65, 0.35], [0.65, 0.35], [0.35, 0.65], [0.85, 0.15]])
    curve = reliability_curve(probabilities, np.array([0, 1, 1, 0]), bins=10)
    assert curve.counts.tolist() == [0, 0, 0, 0, 0, 0, 3, 0, 1, 0]
    assert curve.accuracy[6] == pytest.approx(2 / 3) and curve.accuracy[8] == 1.0
    assert curve.ece == pytest.approx(0.75 * abs(2 / 3 - 0.65) + 0.25 * 0.15)  # count-weighted
    assert np.isnan(curve.accuracy[0])  # empty bins have no accuracy
    with pytest.raises(MtkitError, match="sum to 1"):
        reliability_curve(probabilities * 2, np.array([0, 1, 1, 0]))
    with pytest.raises(MtkitError, match="bins"):
        reliability_curve(probabilities, np.array([0, 1, 1, 0]), bins=0)


def test_temperature_scaling_undoes_over_confidence():
    validation, test = _sampled(3000, 1, sharpen=3.0), _sampled(3000, 2, sharpen=3.0)
    temperature = fit_temperature(validation)
    assert temperature == pytest.approx(3.0, rel=0.1)  # the sharpening it has to undo
    scaled = validation.with_temperature(temperature)
    assert scaled.negative_log_likelihood < validation.negative_log_likelihood
    calibrated = test.with_temperature(temperature)
    assert calibrated.expected_calibration_error < test.expected_calibration_error / 2
    np.testing.assert_array_equal(calibrated.predictions, test.predictions)
    with pytest.raises(MtkitError, match="Evaluation"):
        fit_temperature(validation.logits)


def test_temperature_scaled_model_gives_the_rescaled_probabilities():
    data = _blobs(20, 0)
    model = Linear(torch.randn(4, 2, generator=torch.Generator().manual_seed(1)) * 5)
    direct = evaluate(model, data).with_temperature(2.5)
    wrapped = evaluate(TemperatureScaled(model, 2.5), data)
    np.testing.assert_allclose(wrapped.probabilities, direct.probabilities, atol=1e-6)
    assert evaluate(model, data, temperature=2.5).temperature == 2.5
    with pytest.raises(MtkitError, match="temperature"):
        TemperatureScaled(model, 0.0)


# --- forgetting for text ---------------------------------------------------------------------


def test_masked_token_forgetting_is_zero_for_an_unchanged_encoder_and_grows_when_it_moves():
    texts = _texts()
    tokenizer = mt.Tokenizer.fit(texts.texts, min_freq=1)
    torch.manual_seed(0)
    pretrained = mt.MaskedTokenModel(
        mt.TextEncoder(vocab_size=tokenizer.vocab_size, max_length=8, width=8, depth=1, heads=2)
    )
    classifier = mt.Classifier(copy.deepcopy(pretrained.encoder), 2)
    options = dict(tokenizer=tokenizer, mask_rate=0.5)
    unchanged = masked_token_forgetting(pretrained, classifier, texts, **options)
    assert unchanged.after == unchanged.before and unchanged.weight_change == 0.0
    assert masked_token_error(pretrained, texts, **options) == unchanged.before  # same blanks
    with torch.no_grad():
        for parameter in classifier.encoder.parameters():
            parameter.add_(torch.randn_like(parameter))
    moved = masked_token_forgetting(pretrained, classifier, texts, **options)
    assert moved.after > moved.before == unchanged.before and moved.weight_change > 0.5
    with pytest.raises(MtkitError, match="masked-token model"):
        masked_token_error(classifier, texts, tokenizer=tokenizer)


# --- figures ---------------------------------------------------------------------------------


def test_evaluation_figures():
    from mtkit.plots import evaluation as figures

    result = _sampled(300, 0)
    assert len(figures.plot_confusion_matrix(result).axes[0].texts) == 16  # one count per cell
    assert figures.plot_reliability_diagram(result).axes[0].get_title().startswith("ECE")
    assert len(figures.plot_class_errors(result).axes[0].patches) == 4
    images = _blobs(12, 0)
    wrong = Evaluation(
        images.labels.numpy(), np.eye(2)[1 - images.labels.numpy()], ["a", "b"], images.images
    )
    assert len(figures.plot_mistakes(confident_mistakes(wrong, 4)).axes) == 4
    with pytest.raises(MtkitError, match="mistakes_table"):
        figures.plot_mistakes(confident_mistakes(_evaluation(np.eye(3), [1, 2, 0], ["t"] * 3), 2))
    maps = figures.plot_embedding_maps(Identity(), images, methods=("pca",))
    assert len(maps.axes) == 1
    plt.close("all")
