"""The machinery every stage uses: the training loop (train.py) and its callbacks
(callbacks.py), safe checkpoints (checkpoint.py), the disk cache (cache.py), torchrun/DDP
support (distributed.py), batched inference (batches.py) and small helpers (utils.py).
Nothing here knows about pretraining, fine-tuning or adapters."""

from mtkit.core import batches, cache, callbacks, checkpoint, distributed, train, utils  # noqa: F401
