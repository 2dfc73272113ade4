"""The machinery every stage uses: the training loop and its callbacks (train.py), safe
checkpoints (checkpoint.py), the disk cache (cache.py), torchrun/DDP support (distributed.py),
batched inference (batches.py) and small helpers (utils.py). Nothing here knows about
pretraining, fine-tuning or adapters."""

from mtkit.core import batches, cache, checkpoint, distributed, train, utils  # noqa: F401
