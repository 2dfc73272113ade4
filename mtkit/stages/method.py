"""A fine-tuning method is two choices: what the encoder does, and what is added to it.

    strategy   what the encoder's own weights do (finetune.STRATEGIES): stay frozen
               ("linear_probe"), all learn ("full"), learn from the top down
               ("gradual_unfreeze"), learn slower lower down ("discriminative_lr"), or start
               again from random weights ("scratch")
    addition   what is put beside them: nothing (None), an adapter ("lora", "bottleneck",
               "prompt") or a bigger head ("mlp_head")

An adapter keeps the encoder frozen (that is what it is for), so it goes with "linear_probe".
Every track (images, the small Transformer, a pretrained MiniLM), the pipeline's adapt stage and
drift adaptation attach their addition here, with `attach`, and train with `train_method`.

A new kind of addition is one class and one registration, as peft registers its tuners:

    @register_addition
    @dataclass(frozen=True)
    class MyAdapter(Addition):
        kind: ClassVar[str] = "my_adapter"
        size: int = 8
        def attach(self, classifier, adapter_name): ...        # put it in, freeze the base
        @property
        def label(self): return f"my adapter {self.size}"

after which `addition="my_adapter"` works in every method of mtkit.experiments.
Where an adapter goes is the encoder's business: each mtkit encoder names its `lora_targets`,
`bottleneck_places` (module names inside the encoder) and its `token_embedding`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from mtkit.core.batches import as_labelled
from mtkit.core.utils import MtkitError, check_choice, check_positive
from mtkit.stages.adapters import add_adapters, add_lora, add_prompt, add_task_head, train_adapter
from mtkit.stages.finetune import STRATEGIES, fine_tune, predict

ADDITIONS: dict[str, type[Addition]] = {}
HEADS = ("keep", "new_task", "task_from_head")


def register_addition(cls: type[Addition]) -> type[Addition]:
    """Make `cls` available by its `kind` everywhere a method takes `addition=`."""
    if not (isinstance(cls, type) and issubclass(cls, Addition)):
        raise MtkitError(f"register_addition takes an Addition subclass, got {cls!r}")
    if not isinstance(getattr(cls, "kind", None), str) or not cls.kind:
        raise MtkitError(f"{cls.__name__} needs a class attribute `kind` (its name)")
    ADDITIONS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class Addition:
    """What is put beside a Classifier's encoder. Subclasses are frozen dataclasses of knobs."""

    kind: ClassVar[str] = ""
    # True: the addition freezes the encoder and trains alone with the head (an adapter);
    # False: it only changes the head, and the strategy decides what the encoder does.
    is_adapter: ClassVar[bool] = True

    def attach(self, classifier: nn.Module, adapter_name: str) -> None:
        """Put the addition into `classifier` (in place)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """A short name for tables and legends, computed from the fields."""
        return self.kind


def resolve_addition(addition, defaults: dict | None = None) -> Addition | None:
    """None, a registered name (built with `defaults[name]` as keyword arguments) or an
    Addition → an Addition or None."""
    if addition is None or isinstance(addition, Addition):
        return addition
    check_choice("addition", addition, (None, *ADDITIONS))
    return ADDITIONS[addition](**(defaults or {}).get(addition, {}))


def _encoder_names(classifier: nn.Module, attribute: str, kind: str) -> list[str]:
    names = getattr(classifier.encoder, attribute, None)
    if names is None:
        raise MtkitError(
            f"{type(classifier.encoder).__name__} does not say where {kind} goes: give it an "
            f"`{attribute}` attribute, or give the addition explicit places"
        )
    return [f"encoder.{name}" if name else "encoder" for name in names]


@register_addition
@dataclass(frozen=True)
class LoRA(Addition):
    """LoRA (Hu et al., 2021) of `rank` on the encoder's `lora_targets` (or `targets`, names
    relative to the classifier)."""

    kind: ClassVar[str] = "lora"
    rank: int = 4
    alpha: float | None = None
    targets: tuple[str, ...] | None = None

    def __post_init__(self):
        check_positive("lora rank", self.rank, integer=True)

    def attach(self, classifier, adapter_name):
        targets = self.targets or _encoder_names(classifier, "lora_targets", "LoRA")
        add_lora(classifier, list(targets), rank=self.rank, alpha=self.alpha,
                 adapter_name=adapter_name)  # fmt: skip

    @property
    def label(self):
        return f"LoRA r={self.rank}"


@register_addition
@dataclass(frozen=True)
class Bottleneck(Addition):
    """Bottleneck adapters (Houlsby et al., 2019) of width `size` after the encoder's
    `bottleneck_places` (or `places`, names relative to the classifier)."""

    kind: ClassVar[str] = "bottleneck"
    size: int = 16
    places: tuple[str, ...] | None = None

    def __post_init__(self):
        check_positive("bottleneck size", self.size, integer=True)

    def attach(self, classifier, adapter_name):
        places = self.places or _encoder_names(classifier, "bottleneck_places", "a bottleneck")
        add_adapters(classifier, list(places), size=self.size, adapter_name=adapter_name)

    @property
    def label(self):
        return f"bottleneck {self.size}"


@register_addition
@dataclass(frozen=True)
class Prompt(Addition):
    """Prompt tuning (Lester et al., 2021): `length` learned vectors in front of every text,
    started from random rows of the encoder's `token_embedding`."""

    kind: ClassVar[str] = "prompt"
    length: int = 8

    def __post_init__(self):
        check_positive("prompt length", self.length, integer=True)

    def attach(self, classifier, adapter_name):
        add_prompt(classifier, self.length, adapter_name)

    @property
    def label(self):
        return f"prompt tuning ({self.length} vectors)"


@register_addition
@dataclass(frozen=True)
class MLPHead(Addition):
    """A head with one hidden layer of `hidden` units instead of the linear one."""

    kind: ClassVar[str] = "mlp_head"
    is_adapter: ClassVar[bool] = False
    hidden: int = 64

    def __post_init__(self):
        check_positive("mlp_head hidden", self.hidden, integer=True)

    def attach(self, classifier, adapter_name):
        classifier.head = nn.Sequential(
            nn.Linear(classifier.feature_size, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, classifier.num_classes),
        )

    @property
    def label(self):
        return f"MLP head {self.hidden}"


def check_method(strategy: str, addition: Addition | None) -> None:
    """Refuse combinations that would silently mean something else."""
    check_choice("strategy", strategy, STRATEGIES)
    if addition is not None and addition.is_adapter and strategy != "linear_probe":
        raise MtkitError(
            f"an adapter ({addition.label}) keeps the encoder frozen and trains alone: use "
            f"strategy='linear_probe' with it (got {strategy!r}), or no adapter"
        )
    if addition is not None and strategy == "scratch":
        raise MtkitError("scratch trains the plain architecture from random weights; no addition")


def attach(
    classifier: nn.Module,
    addition: Addition | None,
    *,
    head: str = "keep",
    adapter_name: str = "default",
) -> nn.Module:
    """Put `addition` into `classifier` (in place) and decide which head trains; returns it.

    head (with an adapter): "keep" trains the classifier's own head beside the adapter;
        "new_task" gives the adapter its own new head (adapters.add_task_head), so one frozen
        backbone can switch between tasks; "task_from_head" does the same, starting the new
        head from the current one (so training starts exactly from the model as it was).
    Without an addition nothing changes: the strategy alone decides what trains.
    """
    check_choice("head", head, HEADS)
    if addition is None:
        return classifier
    addition.attach(classifier, adapter_name)
    if not addition.is_adapter:
        return classifier
    if head == "keep":
        classifier.head.requires_grad_(True)  # the task's head always learns
    else:
        new_head = add_task_head(classifier, adapter_name, classifier.num_classes)
        if head == "task_from_head":
            new_head.load_state_dict(classifier.head.base.state_dict())
    return classifier


def train_method(classifier, labelled, strategy: str, addition: Addition | None, **options):
    """Train `classifier` (with `addition` attached) on `labelled`: with an adapter, exactly the
    parameters that are trainable now learn (adapters.train_adapter); otherwise fine_tune with
    `strategy`. options: fine_tune's (validation, lr, epochs, ...). Returns a FineTuneResult."""
    check_method(strategy, addition)
    if addition is not None and addition.is_adapter:
        return train_adapter(classifier, labelled, **options)
    return fine_tune(classifier, labelled, strategy=strategy, **options)


def method_label(strategy: str, addition: Addition | None) -> str:
    """ "full", "LoRA r=4", "linear_probe + MLP head 64", ...: the method in a few words."""
    if addition is None:
        return strategy
    return addition.label if addition.is_adapter else f"{strategy} + {addition.label}"


def accuracy(classifier: nn.Module, labelled) -> float:
    """Fraction of `labelled` (a dataset or an (inputs, labels) pair) classified correctly."""
    inputs, labels = as_labelled(labelled)
    return (predict(classifier, inputs).argmax(dim=1) == labels).float().mean().item()
