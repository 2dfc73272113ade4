"""Several processes, one training run: DistributedDataParallel in a few small helpers.

`fit` runs unchanged under torchrun. Call `setup()` once at the top of the script (the
`python -m mtkit run` command does) and launch it with

    torchrun --standalone --nproc_per_node=2 my_script.py         # 2 processes, this machine
    torchrun --standalone --nproc_per_node=2 -m mtkit run mtkit/configs/digits_pipeline.toml

What happens (data parallelism, as torch's DistributedDataParallel does it):
1. Every process holds a whole copy of the model; DDP copies rank 0's weights to the others
   when it wraps the model, so all copies start equal.
2. Every step, each process takes its own share of the batch: rank 0's shuffled order is sent
   to all, and process r keeps every world_size-th example starting at r (what torch's
   DistributedSampler does for a DataLoader, here for in-memory tensors).
3. During backward, DDP averages the gradients over the processes, so every process takes
   the same optimizer step and the copies stay equal.
4. The metrics `fit` records are averaged over the processes, so all of them see the same
   History and take the same early-stopping decisions (a process that stopped alone would
   leave the others waiting forever).
5. Only rank 0 writes files (run folders, checkpoints) and shows progress bars.

`batch_size` is per process, as in PyTorch: a step on N processes sees N × batch_size
examples, the same as one process with batch_size × N. Without torchrun every helper here
does nothing, so single-process code pays nothing for this module.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def launched_by_torchrun() -> bool:
    """True when the environment describes more than one process (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(backend: str | None = None) -> bool:
    """Join the process group that torchrun describes; returns True when training is distributed.

    backend: "gloo" (CPU) or "nccl" (one GPU per process); default: NCCL when CUDA is available.
    Without torchrun it does nothing and returns False, so scripts can always call it.
    """
    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":  # one GPU per process: LOCAL_RANK picks it on this machine
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def cleanup() -> None:
    """Leave the process group (at the end of a script); does nothing when not distributed."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's number, 0 ... world_size − 1 (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, the one process that writes files and shows progress."""
    return rank() == 0


def shard_size(count: int) -> int:
    """How many of `count` examples each process gets per epoch: ceil(count / world_size)."""
    return math.ceil(count / world_size())


def shard_order(order: torch.Tensor) -> torch.Tensor:
    """This process's share of a shuffled order of N examples: shard_size(N) int64 indices.

    order: a permutation of range(N) (on the training device). Every process must agree on
    it, so rank 0's is sent to all. Like DistributedSampler, the order is padded by repeating
    its start up to a multiple of world_size (every process then takes the same number of
    steps), and process r keeps positions r, r + world_size, r + 2·world_size, ...
    The union of the processes' k-th batches is then order[k·B : (k+1)·B] with
    B = world_size × batch_size: the batch one process with batch size B would have seen.
    """
    dist.broadcast(order, src=0)
    world = world_size()
    total = shard_size(len(order)) * world
    padded = order.repeat(math.ceil(total / len(order)))[:total]
    return padded[rank() :: world]


def average(values: dict[str, float]) -> dict[str, float]:
    """Each value's mean over the processes, the same numbers on every process."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)  # the same order on every process
    device = torch.device("cuda", torch.cuda.current_device()) if _uses_nccl() else "cpu"
    tensor = torch.tensor([values[key] for key in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)  # a sum over the processes
    means = dict(zip(keys, (tensor / world_size()).tolist(), strict=True))
    return {key: means[key] for key in values}  # back in the caller's order


def _uses_nccl() -> bool:
    return dist.get_backend() == "nccl"


class _LossInForward(nn.Module):
    """A module whose forward is `loss_fn(model, batch)`.

    DDP can only average the gradients of computations that run inside its forward. Loss
    functions call more than `model(x)` (an autoencoder's `training_loss`, L2-SP's pull on
    `model.encoder`), so the whole loss computation becomes the forward that DDP wraps.
    """

    def __init__(self, model: nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


class DataParallelLoss:
    """Call it like `loss_fn(model, batch)`; it computes the loss through DDP.

    DDP averages gradients for the parameters that were trainable when it wrapped the model.
    Gradual unfreezing switches more parameters on during training, so the wrapper is built
    again whenever the set of trainable parameters changes (every process changes it in the
    same epoch, since callbacks see the same History everywhere). Every trainable parameter
    must take part in the loss (DDP's default, find_unused_parameters=False, is the fast one);
    freeze the ones that do not.
    """

    def __init__(self, model: nn.Module, loss_fn):
        self.module = _LossInForward(model, loss_fn)
        self.trainable: list[bool] | None = None
        self.parallel: DistributedDataParallel | None = None

    def __call__(self, model: nn.Module, batch):
        trainable = [parameter.requires_grad for parameter in model.parameters()]
        if trainable != self.trainable:
            self.parallel = None  # drop the old wrapper (and its gradient hooks) first
            on_gpu = next(model.parameters()).is_cuda
            self.parallel = DistributedDataParallel(
                self.module, device_ids=[torch.cuda.current_device()] if on_gpu else None
            )
            self.trainable = trainable
        return self.parallel(batch)


def parallel_loss(model: nn.Module, loss_fn):
    """`loss_fn` itself in a single process; under torchrun, a DataParallelLoss around it."""
    if is_distributed():
        return DataParallelLoss(model, loss_fn)
    if launched_by_torchrun():
        warnings.warn(
            "started by torchrun, but no process group: call mtkit.core.distributed.setup() first; "
            "each process now trains its own model alone",
            stacklevel=3,
        )
    return loss_fn
