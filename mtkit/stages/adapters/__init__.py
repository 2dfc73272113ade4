"""Adapters: teach a frozen network a new task by training a few new weights.

Fine-tuning rewrites every weight of a pretrained network, and each task then needs its own copy.
Adapters keep the pretrained network (the *base*, or *backbone*) frozen and add small trainable
pieces beside it. One backbone can then serve many tasks, each with an adapter that is a tiny
file. Three kinds, each a few lines:

    LoRA (Hu et al., 2021)       a layer's weight W is used as W + (alpha / rank) · B A, where
                                 B A is a low-rank matrix: out×rank times rank×in
    bottleneck (Houlsby et al.,  after a block, h ↦ h + up(relu(down(h))): a small MLP whose
      2019)                      output is added to the block's output
    prompt tuning (Lester et     learned vectors prepended to a sequence of token embeddings
      al., 2021)

Every adapter is attached the same way (`AdaptedModule`): the layer it changes is replaced, at
the same place in the model, by a wrapper that keeps that layer as `base` and the adapters in a
dict by name. Adapters start as "do nothing" (LoRA's B and the bottleneck's up-projection are
zero), so a fresh adapter leaves the model's outputs exactly as they were, and training starts
from the pretrained model rather than from a damaged one.

One frozen backbone serving two tasks, each a named adapter with its own head:

    classifier = mt.Classifier(pretrained.encoder, num_classes=10)
    add_lora(classifier, "encoder", rank=4, adapter_name="digit")   # base frozen, LoRA trains
    add_task_head(classifier, "digit", num_classes=10)               # the task's own head
    train_adapter(classifier, digit_data, validation=...)
    add_lora(classifier, "encoder", rank=4, adapter_name="high")    # a second task, same base
    add_task_head(classifier, "high", num_classes=2)
    train_adapter(classifier, high_data, validation=...)
    set_active_adapter(classifier, "digit")                          # classifier(x): N×10 again
    save_adapter(classifier, "digit.pt", "digit")                    # kilobytes, not the model

The files, one idea each. Start with lora.py: read top to bottom, it is all of LoRA.
    lora.py        LoRA: LoRAWeights, LoRALinear, LoRAConv2d, add_lora, merge_lora
    wrapper.py     AdaptedModule, the wrapper every adapter lives in, and how wrapped layers
                   are found again by their original names
    bottleneck.py  BottleneckAdapter, AdaptedBlock, add_adapters
    prompt.py      SoftPrompt, PromptTuning, add_prompt
    tasks.py       one backbone, many tasks: TaskHeads, add_task_head, set_active_adapter,
                   freeze_base, trainable_parameters
    files.py       save_adapter, load_adapter: an adapter alone in a small file
    training.py    train_adapter: train what is trainable now
Comparing adapters with the alternatives is an experiment: mtkit/experiments/adapters.py.
"""

from mtkit.stages.adapters.bottleneck import AdaptedBlock, BottleneckAdapter, add_adapters
from mtkit.stages.adapters.files import ADAPTER_FORMAT, load_adapter, save_adapter
from mtkit.stages.adapters.lora import (
    LoRAConv2d,
    LoRAConvWeights,
    LoRALinear,
    LoRAWeights,
    add_lora,
    merge_lora,
    unmerge_lora,
)
from mtkit.stages.adapters.prompt import PromptTuning, SoftPrompt, add_prompt
from mtkit.stages.adapters.tasks import (
    ParameterCount,
    TaskHeads,
    active_adapter,
    adapter_names,
    add_task_head,
    base_state_dict,
    freeze_base,
    set_active_adapter,
    trainable_parameters,
)
from mtkit.stages.adapters.training import train_adapter
from mtkit.stages.adapters.wrapper import AdaptedModule

__all__ = [
    "AdaptedModule",
    "LoRAWeights",
    "LoRAConvWeights",
    "LoRALinear",
    "LoRAConv2d",
    "add_lora",
    "merge_lora",
    "unmerge_lora",
    "BottleneckAdapter",
    "AdaptedBlock",
    "add_adapters",
    "SoftPrompt",
    "PromptTuning",
    "add_prompt",
    "TaskHeads",
    "add_task_head",
    "adapter_names",
    "active_adapter",
    "set_active_adapter",
    "freeze_base",
    "ParameterCount",
    "trainable_parameters",
    "base_state_dict",
    "ADAPTER_FORMAT",
    "save_adapter",
    "load_adapter",
    "train_adapter",
]

# Experiment helpers that lived here before the layout separated stages from experiments.
_MOVED_TO_EXPERIMENTS = (
    "ADAPTATION_METHODS",
    "DEFAULT_LEARNING_RATES",
    "AdaptationRun",
    "MethodSummary",
    "adapt_encoder",
    "summarize_runs",
)


def __getattr__(name: str):
    """Old names: adapt_encoder & co. are in mtkit.experiments.adapters, accuracy in
    mtkit.stages.method; they still answer here, with a DeprecationWarning."""
    import importlib

    from mtkit import _moved

    if name in _MOVED_TO_EXPERIMENTS or name == "accuracy":
        where = "mtkit.stages.method" if name == "accuracy" else "mtkit.experiments.adapters"
        _moved.warn_moved(f"mtkit.adapters.{name}", f"{where}.{name}")
        return getattr(importlib.import_module(where), name)
    raise AttributeError(f"module 'mtkit.stages.adapters' has no attribute {name!r}")
