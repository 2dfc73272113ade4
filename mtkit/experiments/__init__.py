"""Experiments: one method protocol for every track, and label efficiency over seeds.

protocol.py     Method, ClassifierMethod (the shared recipe), FineTuned, MethodResult,
                PretrainCache
baselines.py    scikit-learn: logistic regression (pixels), PCA + LR, TF-IDF + LR
image_pretraining.py  how the image encoder is pretrained: PretrainSpec (denoising
                autoencoder), ContrastiveSpec (SimCLR), architecture chosen by image size
images.py       the image track: FineTuneMethod, SelfTrainMethod, ConsistencyMethod
text.py         the small Transformer of notebook 05: TextFineTuneMethod
pretrained.py   a real pretrained Transformer (MiniLM): PretrainedTransformerMethod
setfit.py       MiniLM fine-tuned on pairs of labelled texts, then a logistic head: SetFitMethod
distill.py      a small student trained on a teacher's predictions: DistilledMethod, footprint
adapters.py     adapt_encoder: one adaptation method on a copy of an encoder, measured
efficiency.py   label_efficiency, its table, summaries and paired verdicts
"""

from mtkit.experiments import adapters, pretrained, text  # noqa: F401
from mtkit.experiments.baselines import (
    LogisticRegressionBaseline,
    PCALogisticBaseline,
    TfidfLogisticBaseline,
)
from mtkit.experiments.distill import DistilledMethod, Footprint, TrainedOnce, footprint
from mtkit.experiments.efficiency import (
    EfficiencyRow,
    LabelEfficiencyTable,
    SummaryRow,
    label_efficiency,
    paired_difference,
    summarize,
)
from mtkit.experiments.image_pretraining import (
    IMAGE_PRETRAINING,
    ContrastiveSpec,
    PretrainSpec,
    non_test_images,
    pretrained_autoencoder,
)
from mtkit.experiments.images import (
    ConsistencyMethod,
    FineTuneMethod,
    SelfTrainMethod,
    default_methods,
)
from mtkit.experiments.pretrained import PretrainedTransformerMethod, embed_texts
from mtkit.experiments.protocol import (
    ClassifierMethod,
    FineTuned,
    Method,
    MethodResult,
    PretrainCache,
)
from mtkit.experiments.setfit import SetFitClassifier, SetFitMethod
from mtkit.experiments.text import TextFineTuneMethod, default_text_methods, non_test_texts

__all__ = [
    "IMAGE_PRETRAINING",
    "ClassifierMethod",
    "ContrastiveSpec",
    "DistilledMethod",
    "Footprint",
    "EfficiencyRow",
    "FineTuneMethod",
    "FineTuned",
    "LabelEfficiencyTable",
    "LogisticRegressionBaseline",
    "Method",
    "MethodResult",
    "PCALogisticBaseline",
    "PretrainCache",
    "PretrainSpec",
    "PretrainedTransformerMethod",
    "SelfTrainMethod",
    "SetFitClassifier",
    "SetFitMethod",
    "ConsistencyMethod",
    "SummaryRow",
    "TextFineTuneMethod",
    "TfidfLogisticBaseline",
    "TrainedOnce",
    "default_methods",
    "default_text_methods",
    "embed_texts",
    "footprint",
    "label_efficiency",
    "non_test_images",
    "non_test_texts",
    "paired_difference",
    "pretrained_autoencoder",
    "summarize",
]


def __getattr__(name: str):
    """`plot_label_efficiency` moved to mtkit.plots (experiments never import plots)."""
    if name == "plot_label_efficiency":
        from mtkit import _moved
        from mtkit.plots import experiments as figures

        _moved.warn_moved("mtkit.experiments.plot_label_efficiency", "mtkit.plots." + name)
        return figures.plot_label_efficiency
    raise AttributeError(f"module 'mtkit.experiments' has no attribute {name!r}")
