import dataclasses

import pytest
import torch
from torch.nn import functional as F

import mtkit as mt
from mtkit.core.utils import MtkitError
from mtkit.models.text import TextEncoderConfig
from mtkit.stages.pretrain import add_noise, reconstruction_loss


def test_gaussian_noise_corrupts_a_copy_and_stays_in_range():
    images = torch.rand(16, 1, 8, 8)
    original = images.clone()
    noisy = add_noise(images, "gaussian", 0.3)
    assert torch.equal(images, original)
    assert not torch.allclose(noisy, images)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_masking_noise_hides_about_the_asked_fraction():
    torch.manual_seed(0)
    images = torch.ones(200, 1, 8, 8)
    hidden = (add_noise(images, "masking", 0.25) == 0).float().mean().item()
    assert 0.22 < hidden < 0.28


def test_denoising_loss_compares_with_clean_targets():
    """The model sees noisy inputs, but the target is the clean image."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images):
            seen.append(images)
            return images

    images = torch.rand(4, 1, 8, 8)
    loss = reconstruction_loss(Recorder(), (images,), "masking", 0.5)
    assert not torch.equal(seen[0], images)
    assert loss.item() == pytest.approx(torch.mean((seen[0] - images) ** 2).item())


def test_bad_noise_arguments():
    with pytest.raises(MtkitError, match="unknown noise"):
        add_noise(torch.rand(1, 1, 2, 2), "salt")
    with pytest.raises(MtkitError, match="non-negative"):
        add_noise(torch.rand(1, 1, 2, 2), "gaussian", -0.1)
    with pytest.raises(MtkitError, match="fraction"):
        add_noise(torch.rand(1, 1, 2, 2), "masking", 1.0)


def test_pretraining_lowers_reconstruction_error_on_digits():
    digits = mt.load_images("digits")
    mt.seed_everything(0)
    model = mt.DenseAutoencoder(hidden_sizes=(64,), latent_size=16)
    before = mt.reconstruction_error(model, digits)
    history = mt.pretrain_autoencoder(
        model, digits, noise="gaussian", epochs=5, progress=False, device="cpu"
    )
    assert len(history) == 5
    assert mt.reconstruction_error(model, digits) < 0.5 * before


def test_reconstruction_error_adds_up_exactly_what_a_batch_loop_adds_and_keeps_the_mode():
    torch.manual_seed(0)
    model = mt.DenseAutoencoder(hidden_sizes=(16,), latent_size=4).train()
    images = torch.rand(70, 1, 8, 8)
    total = 0.0
    with torch.no_grad():
        for start in range(0, 70, 32):
            chunk = images[start : start + 32]
            total += F.mse_loss(model.eval()(chunk), chunk, reduction="sum").item()
    model.train()
    assert mt.reconstruction_error(model, images, batch_size=32) == total / images.numel()
    assert model.training


def test_pretraining_never_needs_labels():
    digits = mt.load_images("digits")
    model = mt.DenseAutoencoder(hidden_sizes=(16,), latent_size=4)
    history = mt.pretrain_autoencoder(
        model, digits.without_labels(), epochs=1, progress=False, device="cpu"
    )
    assert len(history) == 1
    with pytest.raises(MtkitError, match="ImageDataset"):
        mt.pretrain_autoencoder(model, [1, 2, 3], epochs=1)


TOY_TEXTS = [
    f"the {animal} {verb} the {thing}"
    for animal in ("cat", "dog", "bird")
    for verb in ("sees", "likes", "wants")
    for thing in ("ball", "food", "tree")
] * 4


def test_masked_token_pretraining_learns_a_toy_language():
    from mtkit.models.text import MaskedTokenModel, TextEncoder

    tokenizer = mt.Tokenizer.fit(TOY_TEXTS, min_freq=1)
    ids = tokenizer.encode(TOY_TEXTS, max_length=8)
    mt.seed_everything(0)
    encoder = TextEncoder(vocab_size=tokenizer.vocab_size, max_length=8, width=32, heads=2)
    history = mt.pretrain_masked_tokens(
        MaskedTokenModel(encoder),
        ids,
        mask_rate=0.3,
        epochs=30,
        lr=3e-3,
        batch_size=36,
        val_ids=ids,
        progress=False,
        device="cpu",
    )
    assert history["val_loss"][-1] < 0.5 * history["val_loss"][0]
    assert history["val_accuracy"][-1] > 0.5


def test_the_text_pretraining_config_holds_an_encoder_config():
    config = mt.TextPretrainConfig(vocab_size=100, width=16, heads=2, epochs=1)
    assert config.encoder == TextEncoderConfig(vocab_size=100, width=16, heads=2)
    assert (config.vocab_size, config.width, config.heads, config.epochs) == (100, 16, 2, 1)
    assert mt.TextPretrainConfig(config.encoder, epochs=1) == config
    assert mt.TextPretrainConfig(encoder=config.encoder, width=32, heads=4).encoder.width == 32
    assert dataclasses.replace(config, seed=1).encoder == config.encoder
    assert mt.TextPretrainConfig(**{**config.__dict__, "seed": 1}).seed == 1
    assert dataclasses.asdict(config)["encoder"]["width"] == 16  # the cache key's input
    with pytest.raises(AttributeError):
        config.width = 32  # read-only: change `encoder` instead
    with pytest.raises(TypeError, match="widht"):
        mt.TextPretrainConfig(widht=16)
    with pytest.raises(MtkitError, match="divisible"):
        mt.TextPretrainConfig(width=30)


def test_pretrained_text_encoder_is_cached_by_config(tmp_path):
    config = mt.TextPretrainConfig(
        vocab_size=100, max_length=8, width=16, heads=2, epochs=1, batch_size=16
    )
    first = mt.pretrained_text_encoder(TOY_TEXTS, config, cache=tmp_path, progress=False)
    again = mt.pretrained_text_encoder(TOY_TEXTS, config, cache=tmp_path, progress=False)
    assert not first.from_cache and again.from_cache
    ids = first.tokenizer.encode(TOY_TEXTS[:3], max_length=8)
    first.encoder.eval(), again.encoder.eval()
    assert torch.equal(first.encoder(ids), again.encoder(ids))
    other = mt.pretrained_text_encoder(
        TOY_TEXTS,
        mt.TextPretrainConfig(**{**config.__dict__, "seed": 1}),
        cache=tmp_path,
        progress=False,
    )
    assert not other.from_cache
    assert len(list(tmp_path.glob("text-encoder-*.pt"))) == 2
    pooled = mt.TextPretrainConfig(config.encoder, pooling="cls", epochs=1, batch_size=16)
    pooling = mt.pretrained_text_encoder(TOY_TEXTS, pooled, cache=tmp_path, progress=False)
    assert not pooling.from_cache
    assert first.encoder.config == dataclasses.replace(
        config.encoder, vocab_size=first.tokenizer.vocab_size
    )
    with pytest.raises(MtkitError, match="at least one text"):
        mt.pretrained_text_encoder([], config, cache=tmp_path)


def test_an_interrupted_text_pretraining_is_returned_but_not_cached(tmp_path):
    """Stop (or a kernel interrupt) ends fit early: the cache must not pass that half-trained
    encoder off as the finished one next time."""
    config = mt.TextPretrainConfig(
        vocab_size=100, max_length=8, width=16, heads=2, epochs=3, batch_size=16
    )

    def interrupt(trainer):
        raise KeyboardInterrupt

    stopper = mt.LambdaCallback(on_batch_end=interrupt)
    stopped = mt.pretrained_text_encoder(
        TOY_TEXTS, config, cache=tmp_path, progress=False, callbacks=[stopper]
    )
    assert stopped.history.stopped_reason == "interrupted" and not stopped.from_cache
    assert not list(tmp_path.glob("text-encoder-*.pt"))
    finished = mt.pretrained_text_encoder(TOY_TEXTS, config, cache=tmp_path, progress=False)
    assert not finished.from_cache and finished.history.stopped_reason == "completed"
    assert len(list(tmp_path.glob("text-encoder-*.pt"))) == 1


def test_fill_masks_guesses_the_toy_words():
    from mtkit.models.text import MaskedTokenModel, TextEncoder
    from mtkit.stages.pretrain import fill_masks

    tokenizer = mt.Tokenizer.fit(TOY_TEXTS, min_freq=1)
    mt.seed_everything(0)
    model = MaskedTokenModel(
        TextEncoder(vocab_size=tokenizer.vocab_size, max_length=8, width=32, heads=2)
    )
    mt.pretrain_masked_tokens(
        model,
        tokenizer.encode(TOY_TEXTS, max_length=8),
        mask_rate=0.3,
        epochs=30,
        lr=3e-3,
        batch_size=36,
        progress=False,
        device="cpu",
    )
    guesses = fill_masks(model, tokenizer, "the <mask> sees the ball", top_k=3)
    assert len(guesses) == 1 and len(guesses[0]) == 3
    assert guesses[0][0][0] in {"cat", "dog", "bird"}
    assert all(not word.startswith("<") for word, _ in guesses[0])
    with pytest.raises(MtkitError, match="no <mask>"):
        fill_masks(model, tokenizer, "the cat sees the ball")
