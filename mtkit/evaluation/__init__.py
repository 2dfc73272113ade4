"""How good is a model, and is a difference real?

metrics.py         evaluate → Evaluation: predictions, reports, confident mistakes, per-class
                   errors; also re-exports the names of probes, calibration and masked_tokens
probes.py          representation quality: embed, k-NN and linear-probe accuracy, neighbours
calibration.py     reliability curves, expected calibration error, temperature scaling
forgetting.py      forgetting for images: reconstruction error before and after fine-tuning
masked_tokens.py   forgetting for text: masked-token loss before and after fine-tuning
inputs.py          images, texts and (inputs, labels) pairs as tensors, at the model's length
stats.py           mean and spread, bootstrap intervals, paired comparisons over seeds
drift.py           has the data changed since training? (MMD two-sample test)

Nothing here imports mtkit.plots: the figures of these results are in mtkit.plots.evaluation.
"""

from mtkit.evaluation import (  # noqa: F401
    calibration,
    drift,
    forgetting,
    inputs,
    masked_tokens,
    metrics,
    probes,
    stats,
)
