"""`summary(model)`: a model's layers, output shapes and parameter counts, as torchinfo shows.

    mt.summary(model)                        layers, types, parameters and trainable parameters
    mt.summary(model, (1, 1, 28, 28))        ... and each layer's output shape, from a forward
    mt.summary(model, example_batch)         ... the same from a real input (e.g. token ids)

Each row is one module, indented by its depth; its parameter counts include everything inside
it (as torchinfo's), so a container's row sums its children's. The totals are counted once per
parameter tensor (a weight shared by two layers counts once), and sizes are in MB of 10^6 bytes,
as torchinfo's. Output shapes come from forward hooks during one forward pass run in eval mode
without gradients: dropout and batch-norm statistics are left exactly as they were.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
from torch import nn

from mtkit.core.utils import MtkitError


@dataclass
class LayerRow:
    """One module: its dotted name ("" for the model), class name, depth (0 for the model),
    output shape (None without an input, "--" if the forward did not call it), and its
    parameters, all and trainable, including those of the modules inside it."""

    name: str
    type: str
    depth: int
    output_shape: object
    params: int
    trainable: int


@dataclass(repr=False)
class ModelSummary:
    """What `summary` found: the rows (up to `depth`) and the whole model's totals."""

    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    param_bytes: int
    buffer_bytes: int

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def size_mb(self) -> float:
        """Parameters and buffers in MB (10^6 bytes, as torchinfo)."""
        return (self.param_bytes + self.buffer_bytes) / 1e6

    def _cells(self) -> list[list[str]]:
        """The table's rows as text: layer (indented), type, output shape, params, trainable."""
        shapes = any(row.output_shape is not None for row in self.rows)
        cells = []
        for row in self.rows:
            layer = "  " * row.depth + (row.name.rsplit(".", 1)[-1] or "(model)")
            line = [layer, row.type] + ([_shape_text(row.output_shape)] if shapes else [])
            cells.append(line + [f"{row.params:,}", f"{row.trainable:,}"])
        return cells

    def _header(self) -> list[str]:
        shapes = any(row.output_shape is not None for row in self.rows)
        return ["layer", "type"] + (["output shape"] if shapes else []) + ["params", "trainable"]

    def _totals(self) -> list[str]:
        return [
            f"total parameters: {self.total_params:,}",
            f"trainable: {self.trainable_params:,}",
            f"frozen: {self.frozen_params:,}",
            f"size: {self.size_mb:.3g} MB (parameters and buffers)",
        ]

    def __str__(self) -> str:
        header, cells = self._header(), self._cells()
        widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
        numeric = {len(header) - 2, len(header) - 1}  # counts are right-aligned

        def text(line):
            parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in
                     enumerate(zip(line, widths, strict=True))]  # fmt: skip
            return "  ".join(parts).rstrip()

        rule = "-" * len(text(header))
        return "\n".join([text(header), rule, *map(text, cells), rule, *self._totals()])

    __repr__ = __str__  # so that the table shows when a summary is the value of a REPL line

    def _repr_html_(self) -> str:
        """The table as HTML, for Jupyter."""
        header = "".join(f"<th>{html.escape(c)}</th>" for c in self._header())
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>"
            for line in self._cells()
        )
        totals = "<br>".join(html.escape(line) for line in self._totals())
        return (
            f"<table style='font-family: monospace; white-space: pre'><tr>{header}</tr>{body}"
            f"</table><p>{totals}</p>"
        )


def summary(model: nn.Module, inputs=None, *, depth: int = 3) -> ModelSummary:
    """A ModelSummary of `model`: one row per module down to `depth`, and exact totals.

    inputs: None (no output shapes); a shape such as (1, 1, 28, 28), batch dimension included,
        for which a float tensor of zeros is made; or a real input: a tensor, or a tuple or list
        of tensors passed as forward's positional arguments (e.g. integer token ids).
    depth: how many levels of submodules get a row (0: only the model's own); the totals always
        count every parameter.
    Raises MtkitError for a model that is not an nn.Module, a bad depth or bad inputs.
    """
    if not isinstance(model, nn.Module):
        raise MtkitError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise MtkitError(f"depth must be a non-negative integer, got {depth!r}")
    modules = [(name, m) for name, m in model.named_modules() if _depth(name) <= depth]
    shapes = (
        None if inputs is None else _output_shapes(model, modules, _as_arguments(model, inputs))
    )
    rows = [_row(name, module, shapes) for name, module in modules]
    parameters = list(model.parameters())  # each shared tensor once
    return ModelSummary(
        rows=rows,
        total_params=sum(p.numel() for p in parameters),
        trainable_params=sum(p.numel() for p in parameters if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in parameters),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
    )


def _depth(name: str) -> int:
    """0 for the model itself (""), 1 for "encoder", 2 for "encoder.layers", ..."""
    return 0 if name == "" else name.count(".") + 1


def _row(name: str, module: nn.Module, shapes: dict | None) -> LayerRow:
    parameters = list(module.parameters())
    return LayerRow(
        name=name,
        type=type(module).__name__,
        depth=_depth(name),
        output_shape=None if shapes is None else shapes.get(name, "--"),
        params=sum(p.numel() for p in parameters),
        trainable=sum(p.numel() for p in parameters if p.requires_grad),
    )


def _as_arguments(model: nn.Module, inputs) -> tuple:
    """forward's positional arguments for `inputs`, on the model's device."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    if (
        isinstance(inputs, (tuple, list, torch.Size))
        and inputs
        and all(
            isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in inputs
        )
    ):
        return (torch.zeros(tuple(inputs), device=device),)
    if isinstance(inputs, torch.Tensor):
        return (inputs.to(device),)
    if (
        isinstance(inputs, (tuple, list))
        and inputs
        and all(isinstance(t, torch.Tensor) for t in inputs)
    ):
        return tuple(t.to(device) for t in inputs)
    raise MtkitError(
        "inputs must be a shape with the batch dimension such as (1, 1, 28, 28), a tensor, or a "
        f"tuple of tensors, got {inputs!r:.80}"
    )


def _output_shapes(model: nn.Module, modules: list, arguments: tuple) -> dict:
    """{module name: output shape} from one forward pass without gradients, in eval mode;
    each module's training flag is put back after it, and the hooks removed."""
    shapes, training = {}, {m: m.training for m in model.modules()}

    def hook_for(name):
        def hook(module, args, output):
            shapes.setdefault(name, _shape(output))  # a layer called twice: its first call

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules]
    try:
        model.eval()
        with torch.no_grad():
            model(*arguments)
    except Exception as error:
        shape = [tuple(t.shape) for t in arguments]
        raise MtkitError(
            f"summary: the model's forward failed on inputs of shape {shape}: {error}"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
    return shapes


def _shape(output):
    """A tensor's shape as a list; a tuple/list or dict of them as the same structure of shapes;
    anything else as its type name."""
    if isinstance(output, torch.Tensor):
        return list(output.shape)
    if isinstance(output, (tuple, list)):
        return [_shape(item) for item in output]
    if isinstance(output, dict):  # e.g. a transformers ModelOutput
        return {key: _shape(value) for key, value in output.items()}
    return type(output).__name__


def _shape_text(shape) -> str:
    return "" if shape is None else str(shape)
