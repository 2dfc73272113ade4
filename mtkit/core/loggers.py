"""Loggers: callbacks for `fit` that write what it records where familiar tools can read it.

    TensorBoardLogger   event files for TensorBoard (`%tensorboard --logdir ...` in Jupyter)
    CSVLogger           one CSV row per epoch, for a spreadsheet or pandas.read_csv

Both read the epoch records of fit's History (see mtkit/core/callbacks.py): epoch, train_loss,
train_<metric>..., val_loss, val_<metric>..., lr, seconds. They write only on the main process
under torchrun, so N processes do not write N copies.

TensorBoard tags: a record's "train_X" becomes "X/train" and "val_X" becomes "X/val", so the
train and validation curves of one metric sit side by side in TensorBoard; "lr" and "seconds"
keep their names. The step of an epoch's scalars is its epoch number (1, 2, ...). Per-batch
values (batch_every=n) go to "batch/loss" and "batch/lr" at the optimizer step; parameter
histograms (histograms=True) to "weights/<parameter name>" at the epoch.

TensorBoard itself is optional: `pip install tensorboard` (or the kit's `tensorboard` extra).
"""

from __future__ import annotations

import csv
from pathlib import Path

from mtkit.core import distributed
from mtkit.core.atomic import write_atomically
from mtkit.core.callbacks import Callback, TrainerState
from mtkit.core.utils import MtkitError, check_positive


def _summary_writer_class():
    """torch's SummaryWriter; MtkitError saying what to install when TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    except ImportError as error:
        raise MtkitError(
            "TensorBoardLogger needs the tensorboard package, which is not installed: "
            "pip install tensorboard"
        ) from error
    return SummaryWriter


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a History key: "train_loss" -> "loss/train", "val_accuracy" ->
    "accuracy/val"; any other key ("lr", "seconds") as it is."""
    for split in ("train", "val"):
        if key.startswith(split + "_"):
            return f"{key[len(split) + 1 :]}/{split}"
    return key


class TensorBoardLogger(Callback):
    """Write fit's losses, metrics and learning rate to TensorBoard event files in `log_dir`.

    log_dir: the folder for the event files (created); use one folder per fit, as TensorBoard
        shows each folder as one run.
    batch_every: also log the loss and learning rate of every n-th optimizer step (0: never).
        Each logged batch costs one GPU sync, which is why it is off by default.
    histograms: also log a histogram of every parameter that requires grad, each epoch: with a
        frozen encoder, exactly the adapter and head weights.
    Raises MtkitError at once (not mid-training) when TensorBoard is not installed.
    Epochs already in the History when training starts (a resumed fit) are logged too, from it.
    """

    def __init__(self, log_dir, *, batch_every: int = 0, histograms: bool = False):
        self._writer_class = _summary_writer_class()  # fail here, before any training
        self.log_dir = Path(log_dir)
        self.batch_every = check_positive("batch_every", batch_every, integer=True, allow_zero=True)
        self.histograms = histograms
        self.writer = None
        self.logged = 0  # how many History records are written

    def on_train_begin(self, trainer: TrainerState) -> None:
        self.logged = 0
        if distributed.is_main_process():
            self.writer = self._writer_class(log_dir=str(self.log_dir))

    def on_batch_end(self, trainer: TrainerState) -> None:
        if self.writer is None or not self.batch_every or trainer.step % self.batch_every:
            return
        if trainer.last_batch_loss is not None:
            self.writer.add_scalar("batch/loss", float(trainer.last_batch_loss), trainer.step)
        self.writer.add_scalar("batch/lr", trainer.optimizer.param_groups[0]["lr"], trainer.step)

    def on_epoch_end(self, trainer: TrainerState) -> None:
        if self.writer is None:
            return
        for record in trainer.history.records[self.logged :]:
            self._log_record(record)
        self.logged = len(trainer.history.records)
        if self.histograms:
            self._log_histograms(trainer)
        self.writer.flush()  # so TensorBoard shows the epoch now, and a crash loses nothing

    def on_train_end(self, trainer: TrainerState) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _log_record(self, record: dict) -> None:
        """One scalar per number in an epoch's record, at step = its epoch."""
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tensorboard_tag(key), value, record["epoch"])

    def _log_histograms(self, trainer: TrainerState) -> None:
        for name, parameter in trainer.model.named_parameters():
            if parameter.requires_grad:
                values = parameter.detach().float().cpu()
                self.writer.add_histogram(f"weights/{name}", values, trainer.epoch)


class CSVLogger(Callback):
    """Write fit's History to the CSV file `path`: a header, then one row per epoch.

    The columns are every key of the records, in the order they first appear (epoch, train_loss,
    ..., lr, seconds). The whole file is rewritten, atomically, after each epoch: a key that
    appears in a later epoch (a metric a callback adds, say) simply becomes a new column, empty
    in the earlier rows, and a reader never sees a half-written file. A file already at `path`
    is replaced. Epochs already in the History (a resumed fit) are written too.
    """

    def __init__(self, path):
        self.path = Path(path)
        if self.path.is_dir():
            raise MtkitError(
                f"CSVLogger path must be a file like run/history.csv, got the folder {str(path)!r}"
            )

    def on_epoch_end(self, trainer: TrainerState) -> None:
        if distributed.is_main_process():
            write_csv(self.path, trainer.history.records)


def write_csv(path, records: list[dict]) -> Path:
    """Write `records` (dicts) to `path` as CSV, atomically; returns the path.

    Columns: every key, in the order keys first appear; a missing value is an empty cell.
    Floats are written in full (Python's str of a float round-trips), so float(cell) gives the
    recorded number back exactly.
    """
    columns = list(dict.fromkeys(key for record in records for key in record))

    def write(file):
        writer = csv.DictWriter(file, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow(record)

    return write_atomically(path, write, mode="w")
