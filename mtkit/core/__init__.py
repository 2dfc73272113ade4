"""The machinery every stage uses: the training loop (train.py) and its callbacks
(callbacks.py), safe checkpoints (checkpoint.py), the disk cache (cache.py), torchrun/DDP
support (distributed.py), batched inference (batches.py) and small helpers (utils.py).
The loggers (loggers.py) write fit's History for TensorBoard and as CSV.
Nothing here knows about pretraining, fine-tuning or adapters."""

from mtkit.core import (  # noqa: F401
    batches,
    cache,
    callbacks,
    checkpoint,
    distributed,
    loggers,
    train,
    utils,
)
