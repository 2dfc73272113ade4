"""Adapters: LoRA, bottleneck adapters, prompt tuning, task heads, switching and adapter files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtkit.core.checkpoint import CheckpointError, save_model
from mtkit.core.utils import MtkitError
from mtkit.experiments.adapters import adapt_encoder
from mtkit.models import Classifier, DenseAutoencoder
from mtkit.stages import adapters as A
from mtkit.stages.adapters.wrapper import _adapted_modules


def dense_classifier(seed: int = 0, hidden: int = 32, latent: int = 16) -> Classifier:
    """A small Classifier on a dense encoder 64 → hidden → latent, the shape used in notebook 04."""
    torch.manual_seed(seed)
    autoencoder = DenseAutoencoder(hidden_sizes=(hidden,), latent_size=latent)
    return Classifier(autoencoder.encoder, num_classes=10).eval()


def conv_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, kernel_size=3, stride=2, padding=1, dilation=1),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    ).eval()


def images(count: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def randomize_adapters(model: nn.Module, name: str, seed: int = 2) -> None:
    """Give adapter `name` non-zero weights everywhere, as if it had been trained."""
    generator = torch.Generator().manual_seed(seed)
    for _, layer in _adapted_modules(model):
        if name in layer.adapters:
            for parameter in layer.adapters[name].parameters():
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))


# --- fresh adapters change nothing ------------------------------------------------------------


def test_fresh_lora_and_bottleneck_adapters_leave_outputs_unchanged():
    model = dense_classifier()
    x = images()
    before = model(x)
    assert A.add_lora(model, "encoder", rank=4) == ["encoder.block0.0", "encoder.latent"]
    assert torch.equal(model(x), before)
    assert A.add_adapters(model, "encoder.*", size=8, adapter_name="bottle") == [
        "encoder.block0",
        "encoder.latent",
    ]
    assert torch.equal(model(x), before)


def test_fresh_lora_on_conv2d_leaves_outputs_unchanged():
    model = conv_net()
    x = torch.rand(2, 3, 8, 8)
    before = model(x)
    assert A.add_lora(model, nn.Conv2d, rank=2) == ["0", "2"]
    assert isinstance(model[0], A.LoRAConv2d)
    assert torch.equal(model(x), before)


def test_lora_scaling_is_alpha_over_rank_and_a_is_random_b_zero():
    layer = A.LoRALinear(nn.Linear(10, 6), rank=2, alpha=8)
    weights = layer.adapters["default"]
    assert weights.scaling == 4.0
    assert weights.A.shape == (2, 10) and weights.A.abs().sum() > 0
    assert weights.B.shape == (6, 2) and weights.B.abs().sum() == 0
    assert A.LoRALinear(nn.Linear(10, 6), rank=3).adapters["default"].scaling == 1.0


# --- only adapters learn -----------------------------------------------------------------------


def test_only_adapter_parameters_get_gradients_and_change():
    model = dense_classifier()
    A.add_lora(model, "encoder", rank=2, adapter_name="task")
    A.add_task_head(model, "task", num_classes=3)
    base_before = {k: v.clone() for k, v in A.base_state_dict(model).items()}
    adapter_before = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    assert adapter_before and all(".adapters.task." in name for name in adapter_before)

    model.train()
    loss = model(images(8)).logsumexp(dim=1).mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        if ".adapters.task." in name:
            assert parameter.grad is not None, name
        else:
            assert parameter.grad is None, name

    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    A.train_adapter(model, (images(8), labels), epochs=5, lr=1e-2, batch_size=4, seed=0)
    for name, tensor in A.base_state_dict(model).items():
        assert torch.equal(tensor, base_before[name]), f"base tensor {name} changed"
    for name, parameter in model.named_parameters():
        if name in adapter_before:
            assert not torch.equal(parameter, adapter_before[name]), f"{name} did not learn"


def test_freeze_base_and_trainable_parameters_summary():
    model = dense_classifier(hidden=32, latent=16)
    total_base = sum(p.numel() for p in model.parameters())  # 64·32+32 + 32·16+16 + 16·10+10
    A.add_lora(model, "encoder", rank=2)
    lora = 2 * (64 + 32) + 2 * (32 + 16)
    count = A.trainable_parameters(model)
    assert (count.trainable, count.total) == (lora, total_base + lora)
    assert count.percent == pytest.approx(100 * lora / (total_base + lora))
    assert (
        str(count) == f"trainable params {lora:,} of {total_base + lora:,} ({count.percent:.2f}%)"
    )

    A.add_task_head(model, "default", num_classes=2)  # replaces the base head for this task
    count = A.trainable_parameters(model)
    assert count.trainable == lora + 16 * 2 + 2
    assert count.total == total_base - (16 * 10 + 10) + lora + 16 * 2 + 2


# --- merging ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_merged_output_equals_unmerged(kind):
    model = dense_classifier() if kind == "linear" else conv_net()
    x = images() if kind == "linear" else torch.rand(4, 3, 8, 8)
    A.add_lora(model, nn.Linear if kind == "linear" else (nn.Conv2d, nn.Linear), rank=3, alpha=6)
    randomize_adapters(model, "default")
    weights_before = {k: v.clone() for k, v in A.base_state_dict(model).items()}
    unmerged = model(x)

    merged_layers = A.merge_lora(model)
    assert len(merged_layers) >= 2
    merged = model(x)
    assert (merged - unmerged).abs().max() < 1e-5
    assert not torch.equal(
        A.base_state_dict(model)["0.weight" if kind == "conv" else "head.weight"],
        weights_before["0.weight" if kind == "conv" else "head.weight"],
    )

    assert A.unmerge_lora(model) == merged_layers
    assert (model(x) - unmerged).abs().max() < 1e-5
    for name, tensor in A.base_state_dict(model).items():
        torch.testing.assert_close(tensor, weights_before[name], atol=1e-6, rtol=0)


def test_switching_while_merged_is_refused():
    model = dense_classifier()
    A.add_lora(model, "encoder", rank=2, adapter_name="a")
    A.add_lora(model, "encoder", rank=2, adapter_name="b")
    A.merge_lora(model)
    with pytest.raises(MtkitError, match="unmerge_lora"):
        A.set_active_adapter(model, "a")


# --- clear errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [0, -1, 1.5, True])
def test_bad_rank_is_a_clear_error(rank):
    with pytest.raises(MtkitError, match="rank must be a positive integer"):
        A.add_lora(dense_classifier(), "encoder", rank=rank)


def test_rank_larger_than_the_layer_is_a_clear_error_and_changes_nothing():
    model = dense_classifier(hidden=32, latent=16)
    with pytest.raises(MtkitError, match=r"rank 17 is larger than min\(in, out\) = min\(32, 16\)"):
        A.add_lora(model, "encoder", rank=17)
    assert not _adapted_modules(model)  # block0 (64→32) would have fitted: still untouched
    with pytest.raises(MtkitError, match="at most 9"):  # a 3×3 convolution from 1 channel
        A.LoRAConv2d(nn.Conv2d(1, 16, 3), rank=10)


def test_unknown_target_lists_the_layers_that_exist():
    model = dense_classifier()
    with pytest.raises(MtkitError) as error:
        A.add_lora(model, "decoder")
    message = str(error.value)
    assert "'decoder' matches no layer" in message
    assert "encoder.block0.0 (Linear)" in message and "encoder.latent (Linear)" in message
    with pytest.raises(MtkitError, match="matches no layer"):
        A.add_lora(model, nn.Conv2d)
    with pytest.raises(MtkitError, match="no module is called 'encoder.block7'"):
        A.add_adapters(model, "encoder.block7")


def test_other_bad_options_are_clear_errors():
    model = dense_classifier()
    with pytest.raises(MtkitError, match="dropout"):
        A.add_lora(model, "encoder", dropout=1.0)
    with pytest.raises(MtkitError, match="alpha"):
        A.add_lora(model, "encoder", alpha=0)
    with pytest.raises(MtkitError, match="without dots"):
        A.add_lora(model, "encoder", adapter_name="a.b")
    A.add_lora(model, "encoder", adapter_name="task")
    with pytest.raises(MtkitError, match="already has an adapter called 'task'"):
        A.add_lora(model, "encoder", adapter_name="task")
    with pytest.raises(MtkitError, match=r"no adapter called 'other'; the model has \['task'\]"):
        A.set_active_adapter(model, "other")
    with pytest.raises(MtkitError, match="has no adapters"):
        A.set_active_adapter(dense_classifier(), "task")
    with pytest.raises(MtkitError, match="cannot tell how wide"):
        A.add_adapters(model, "encoder.flatten")
    with pytest.raises(MtkitError, match="groups=1"):
        A.LoRAConv2d(nn.Conv2d(4, 4, 3, groups=2))


# --- adapter files ------------------------------------------------------------------------------


def two_task_model(seed: int = 0) -> Classifier:
    """A frozen backbone with task "digit" (LoRA + 10-class head) and "high" (bottleneck + 2)."""
    model = dense_classifier(seed)
    A.add_lora(model, "encoder", rank=4, adapter_name="digit")
    A.add_task_head(model, "digit", num_classes=10)
    A.add_adapters(model, ["encoder.block0", "encoder.latent"], size=8, adapter_name="high")
    A.add_task_head(model, "high", num_classes=2)
    randomize_adapters(model, "digit", seed=3)
    randomize_adapters(model, "high", seed=4)
    return model


def test_save_and_load_adapter_round_trip_restores_outputs_exactly(tmp_path):
    model = two_task_model()
    x = images()
    A.set_active_adapter(model, "digit")
    expected = model(x)
    path = A.save_adapter(model, tmp_path / "digit.pt", "digit")

    fresh = dense_classifier()  # the same backbone weights, no adapters yet
    assert A.load_adapter(fresh, path) == "digit"
    assert A.active_adapter(fresh) == "digit"
    assert torch.equal(fresh(x), expected)
    assert A.trainable_parameters(fresh) == A.trainable_parameters(model)

    # Into a model that already carries another task, under a new name.
    A.set_active_adapter(model, "high")
    high = model(x)
    A.save_adapter(model, tmp_path / "high.pt", "high")
    assert A.load_adapter(fresh, tmp_path / "high.pt", name="parity") == "parity"
    assert fresh.num_classes == 2
    assert torch.equal(fresh(x), high)
    A.set_active_adapter(fresh, "digit")
    assert torch.equal(fresh(x), expected)


def test_names_and_files_do_not_depend_on_the_order_adapters_were_added(tmp_path):
    first_bottleneck = dense_classifier()
    A.add_adapters(first_bottleneck, "encoder.*", size=4, adapter_name="bottle")
    assert A.add_lora(first_bottleneck, "encoder", rank=2, adapter_name="lora") == [
        "encoder.block0.0",  # its original name, although it now sits inside a wrapper
        "encoder.latent",
    ]
    randomize_adapters(first_bottleneck, "lora")
    randomize_adapters(first_bottleneck, "bottle")
    x = images()
    for name in ("lora", "bottle"):
        A.set_active_adapter(first_bottleneck, name)
        expected = first_bottleneck(x)
        A.save_adapter(first_bottleneck, tmp_path / f"{name}.pt", name)

        first_lora = dense_classifier()
        A.add_lora(first_lora, "encoder", rank=3, adapter_name="other")
        A.add_adapters(first_lora, "encoder.*", size=2, adapter_name="other2")
        A.load_adapter(first_lora, tmp_path / f"{name}.pt")
        assert torch.equal(first_lora(x), expected)


def test_adapter_file_is_far_smaller_than_the_model(tmp_path):
    model = dense_classifier(hidden=256, latent=64)
    A.add_lora(model, "encoder", rank=2)
    adapter = A.save_adapter(model, tmp_path / "adapter.pt", "default")
    whole = save_model(tmp_path / "model.pt", dense_classifier(hidden=256, latent=64))
    assert adapter.stat().st_size * 5 < whole.stat().st_size


def test_loading_into_another_architecture_fails_clearly(tmp_path):
    model = two_task_model()
    path = A.save_adapter(model, tmp_path / "digit.pt", "digit")
    other = dense_classifier(hidden=24)
    with pytest.raises(CheckpointError) as error:
        A.load_adapter(other, path)
    message = str(error.value)
    assert "trained on another architecture than this Classifier" in message
    assert "encoder.block0.0.weight (32, 64) in the adapter's backbone vs (24, 64) here" in message
    assert not _adapted_modules(other)  # nothing was changed

    with pytest.raises(CheckpointError, match="model class: 'Classifier' vs 'Sequential'"):
        A.load_adapter(conv_net(), path)


def test_loading_a_whole_model_file_as_an_adapter_fails_clearly(tmp_path):
    path = save_model(tmp_path / "model.pt", dense_classifier())
    with pytest.raises(CheckpointError, match="not an adapter file"):
        A.load_adapter(dense_classifier(), path)


def test_loading_onto_a_differently_trained_backbone_warns(tmp_path):
    path = A.save_adapter(two_task_model(seed=0), tmp_path / "digit.pt", "digit")
    with pytest.warns(UserWarning, match="backbone with other weights"):
        A.load_adapter(dense_classifier(seed=1), path)


def test_head_replaced_by_the_adapter_does_not_count_as_a_different_backbone(tmp_path, recwarn):
    model = two_task_model()
    path = A.save_adapter(model, tmp_path / "digit.pt", "digit")
    fresh = dense_classifier()
    with torch.no_grad():
        fresh.head.weight.add_(1.0)  # unused once the adapter's own head is active
    A.load_adapter(fresh, path)
    assert not [w for w in recwarn if "backbone" in str(w.message)]


# --- several tasks on one backbone -----------------------------------------------------------


def test_switching_adapters_changes_outputs_and_restores_each_task_exactly():
    model = two_task_model()
    x = images()
    A.set_active_adapter(model, "digit")
    digit = model(x)
    assert digit.shape == (6, 10) and model.num_classes == 10
    A.set_active_adapter(model, "high")
    high = model(x)
    assert high.shape == (6, 2) and model.num_classes == 2
    A.set_active_adapter(model, None)
    plain = model(x)
    assert plain.shape == (6, 10)
    assert torch.equal(plain, dense_classifier()(x))  # all adapters off: the original model

    A.set_active_adapter(model, "digit")
    assert torch.equal(model(x), digit)
    A.set_active_adapter(model, "high")
    assert torch.equal(model(x), high)


def test_only_the_active_adapter_is_trainable():
    model = two_task_model()
    A.set_active_adapter(model, "digit")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.digit." in name for name in trainable)
    A.set_active_adapter(model, "high")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.high." in name for name in trainable)
    assert A.adapter_names(model) == ["digit", "high"]


def test_lora_skips_multihead_attention_projections():
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    names = A.add_lora(layer, nn.Linear, rank=2)
    assert names == ["linear1", "linear2"]  # not self_attn.out_proj, which MHA reads directly
    layer(torch.rand(2, 3, 8))


# --- bottleneck adapters on images and sequences --------------------------------------------


def test_bottleneck_adapter_is_residual_and_keeps_shapes():
    adapter = A.BottleneckAdapter(features=6, size=2)
    for shape in [(3, 6), (3, 5, 6), (3, 6, 4, 4)]:
        h = torch.rand(shape)
        assert torch.equal(adapter(h), h)  # the up-projection starts at zero
    with torch.no_grad():
        adapter.up.weight.fill_(0.1)
    h = torch.rand(3, 6, 4, 4)
    manual = h + adapter.up(adapter.activation(adapter.down(h.movedim(1, -1)))).movedim(-1, 1)
    torch.testing.assert_close(adapter(h), manual)


def test_bottleneck_after_conv_blocks():
    model = conv_net()
    x = torch.rand(2, 3, 8, 8)
    before = model(x)
    assert A.add_adapters(model, ["0", "2"], size=3) == ["0", "2"]
    assert torch.equal(model(x), before)
    assert A.trainable_parameters(model).trainable == (8 * 3 + 3 + 3 * 8 + 8) + (
        6 * 3 + 3 + 3 * 6 + 6
    )


# --- prompt tuning on a tiny transformer ------------------------------------------------------


class TinyTextModel(nn.Module):
    """Embedding → PromptTuning → nn.TransformerEncoder → mean over real tokens → linear head."""

    def __init__(self, vocab: int = 12, width: int = 16, prompts: int = 4):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width, padding_idx=0)
        self.prompt = A.PromptTuning(width, num_prompts=prompts)
        layer = nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(width, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, padding = self.prompt(self.embedding(tokens), tokens == 0)
        hidden = self.transformer(hidden, src_key_padding_mask=padding)
        real = (~padding).unsqueeze(-1).float()
        return self.head((hidden * real).sum(1) / real.sum(1))


def toy_text_task(count: int = 64):
    """Label 1 when token 5 occurs in the sequence; zeros are padding at the end."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 12, (count, 7), generator=generator)
    tokens[::3, 5:] = 0
    return tokens, (tokens == 5).any(dim=1).long()


def test_prompt_tuning_prepends_vectors_and_extends_the_padding_mask():
    torch.manual_seed(0)
    prompt = A.PromptTuning(embedding_dim=16, num_prompts=4)
    embeddings = torch.rand(3, 5, 16)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 5])
    out, out_padding = prompt(embeddings, padding)
    assert out.shape == (3, 9, 16)
    assert torch.equal(out[:, 4:], embeddings)
    assert torch.equal(out[0, :4], prompt.adapters["default"].vectors.detach())
    assert out_padding.shape == (3, 9) and not out_padding[:, :4].any()
    assert torch.equal(out_padding[:, 4:], padding)
    assert prompt(embeddings)[1] is None
    A.set_active_adapter(prompt, None)
    assert prompt(embeddings, padding)[0] is embeddings
    with pytest.raises(MtkitError, match="N×T×16"):
        prompt(torch.rand(3, 5, 8))


def test_prompt_tuning_trains_only_the_prompt_and_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    model = TinyTextModel()
    A.freeze_base(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "prompt.adapters.default.vectors"
    ]
    assert A.trainable_parameters(model).trainable == 4 * 16
    frozen = {k: v.clone() for k, v in A.base_state_dict(model).items()}
    tokens, labels = toy_text_task()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    first = loss_fn(model(tokens), labels).item()
    for _ in range(60):
        optimizer.zero_grad()
        loss_fn(model(tokens), labels).backward()
        optimizer.step()
    model.eval()
    assert loss_fn(model(tokens), labels).item() < first
    for name, tensor in A.base_state_dict(model).items():
        assert torch.equal(tensor, frozen[name])

    expected = model(tokens)
    path = A.save_adapter(model, tmp_path / "prompt.pt", "default")
    torch.manual_seed(0)
    fresh = TinyTextModel()
    A.set_active_adapter(fresh, None)
    fresh.prompt.adapters.pop("default")
    assert A.load_adapter(fresh, path, name="token5") == "token5"
    fresh.eval()
    assert torch.equal(fresh(tokens), expected)


def test_prompt_initialised_from_vocabulary_rows():
    embedding = nn.Embedding(10, 4)
    prompt = A.PromptTuning(4, num_prompts=3)
    prompt.initialize_from(embedding, generator=torch.Generator().manual_seed(0))
    vectors = prompt.adapters["default"].vectors
    assert all((embedding.weight == row).all(dim=1).any() for row in vectors)


# --- training helpers ---------------------------------------------------------------------------


def test_adapt_encoder_runs_every_method_on_a_tiny_split():
    from mtkit.data import ImageDataset, few_labels

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(40)
    pictures = torch.rand(120, 1, 8, 8, generator=generator) * 0.3
    pictures[:, 0, labels, :] += 0.7  # class k lights up row k: learnable in a few epochs
    dataset = ImageDataset.from_tensors(pictures.clamp(0, 1), labels)
    split = few_labels(dataset, 5, test_size=30, seed=0)
    encoder = DenseAutoencoder(hidden_sizes=(16,), latent_size=8).encoder
    weights = {k: v.clone() for k, v in encoder.state_dict().items()}
    for method, size in [("linear_probe", None), ("mlp_head", 8), ("lora", 2), ("bottleneck", 4)]:
        classifier, run = adapt_encoder(encoder, split, method, size, epochs=3, seed=0)
        assert 0 <= run.test_accuracy <= 1 and run.parameters.trainable < run.parameters.total
        assert run.label in {
            "linear probe",
            "frozen encoder + MLP head 8",
            "LoRA r=2",
            "bottleneck 4",
        }
    classifier, run = adapt_encoder(encoder, split, "full", epochs=2, seed=0)
    assert run.parameters.percent == 100.0
    for key, value in encoder.state_dict().items():  # the pretrained encoder itself never moves
        assert torch.equal(value, weights[key])
    with pytest.raises(MtkitError, match="size"):
        adapt_encoder(encoder, split, "lora")


# --- cross-check with peft, the reference implementation ------------------------------------
# The same LoRA weights go into mtkit's layers and peft's; the outputs must agree. No model is
# downloaded: the networks are built here.


def tiny_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 4, kernel_size=3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).eval()


def peft_twin(model: nn.Module, targets: list[str], rank: int, alpha: float):
    import peft  # here, not at the top: it imports transformers, which takes seconds

    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets)
    return peft.get_peft_model(model, config).eval()


@torch.no_grad()
def copy_lora_weights(ours: nn.Module, theirs: nn.Module, targets: list[str]) -> None:
    """Random A and B in our layers, copied into peft's lora_A / lora_B of the same layers."""
    generator = torch.Generator().manual_seed(1)
    for name in targets:
        weights = ours.get_submodule(name).adapters["default"]
        weights.A.copy_(torch.randn(weights.A.shape, generator=generator))
        weights.B.copy_(torch.randn(weights.B.shape, generator=generator))
        layer = theirs.base_model.model.get_submodule(name)
        layer.lora_A["default"].weight.copy_(weights.A)
        layer.lora_B["default"].weight.copy_(
            weights.B.reshape(layer.lora_B["default"].weight.shape)
        )


@pytest.mark.parametrize(
    "build, targets, inputs",
    [
        (tiny_mlp, ["0", "2"], lambda: torch.rand(5, 8)),
        (tiny_cnn, ["0", "2", "4"], lambda: torch.rand(5, 3, 8, 8)),
    ],
)
def test_lora_matches_peft(build, targets, inputs):
    rank, alpha = 2, 6.0
    ours = build()
    assert A.add_lora(ours, targets, rank=rank, alpha=alpha) == targets
    theirs = peft_twin(build(), targets, rank, alpha)
    copy_lora_weights(ours, theirs, targets)
    x = inputs()
    expected = theirs(x)
    assert (ours(x) - build()(x)).abs().max() > 1e-2  # the adapters really change the output
    assert (ours(x) - expected).abs().max() < 1e-5

    # Merged weights agree with peft's merged weights too.
    A.merge_lora(ours)
    merged = theirs.merge_and_unload()
    for name in targets:
        difference = ours.get_submodule(name).base.weight - merged.get_submodule(name).weight
        assert difference.abs().max() < 1e-5


BAD_ADAPTER_NAMES = ["a/b", "/abs", "a\\b", "a\x00b", "\udcff", "x" * 300, "line\nbreak", "", ".."]


@pytest.mark.parametrize("name", BAD_ADAPTER_NAMES, ids=repr)
def test_an_adapter_name_must_be_a_plain_file_name(name, tmp_path):
    model = dense_classifier()
    with pytest.raises(MtkitError, match="an adapter name names files and folders"):
        A.add_lora(model, "encoder", adapter_name=name)
    A.add_lora(model, "encoder", adapter_name="task")
    path = A.save_adapter(model, tmp_path / "task.pt", "task")
    with pytest.raises(MtkitError, match="an adapter name names files and folders"):
        A.load_adapter(dense_classifier(), path, name=name)


def _edited(metadata: dict, change: str) -> dict:
    """A copy of an adapter file's metadata with one field broken as `change` says."""
    metadata = {k: v for k, v in metadata.items() if k not in ("content_hash", "metadata_hash")}
    layers = [dict(layer) for layer in metadata["layers"]]
    edits = {
        "no adapter_name": lambda: metadata.pop("adapter_name"),
        "adapter_name a number": lambda: metadata.update(adapter_name=5),
        "layers a number": lambda: metadata.update(layers=5),
        "a layer a string": lambda: metadata.update(layers=["encoder"]),
        "a layer without kind": lambda: metadata.update(layers=[{"path": "x", "config": {}}]),
        "a layer's config a list": lambda: metadata.update(layers=[{**layers[0], "config": []}]),
        "base_shapes a list": lambda: metadata.update(base_shapes=[]),
        "no base_hash": lambda: metadata.pop("base_hash"),
    }
    edits[change]()
    return metadata


@pytest.mark.parametrize(
    "change",
    ["no adapter_name", "adapter_name a number", "layers a number", "a layer a string",
     "a layer without kind", "a layer's config a list", "base_shapes a list", "no base_hash"],
)  # fmt: skip
def test_an_adapter_file_with_malformed_metadata_is_a_checkpoint_error(change, tmp_path):
    from mtkit.core.checkpoint import load_checkpoint, save_checkpoint

    model = dense_classifier()
    A.add_lora(model, "encoder", adapter_name="task")
    path = A.save_adapter(model, tmp_path / "task.pt", "task")
    state, metadata = load_checkpoint(path)
    save_checkpoint(path, state, _edited(metadata, change))  # re-hashed: only the fields differ
    with pytest.raises(CheckpointError, match=r"task\.pt: its adapter metadata"):
        A.load_adapter(dense_classifier(), path)
