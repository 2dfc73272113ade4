import math

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.models import Classifier
from mtkit.models.text import (
    BagOfWordsAutoencoder,
    MaskedTokenModel,
    TextEncoder,
    mask_tokens,
    masked_token_loss,
)

VOCAB = 50


def _ids(count=8, length=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, VOCAB, (count, length), generator=generator)
    ids[:, 0] = 3  # <cls>
    ids[:, length // 2 :] = torch.where(
        torch.arange(count)[:, None] % 2 == 0, 0, ids[:, length // 2 :]
    )
    return ids


def test_encoder_shapes_and_pooling():
    for pooling in ("mean", "cls"):
        encoder = TextEncoder(
            vocab_size=VOCAB, max_length=16, width=32, depth=2, heads=4, pooling=pooling
        )
        hidden, padding = encoder.sequence(_ids())
        assert hidden.shape == (8, 12, 32) and padding.shape == (8, 12)
        assert encoder(_ids()).shape == (8, 32)
        assert encoder.output_size == 32


def test_padding_does_not_change_the_pooled_features():
    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=VOCAB, max_length=16, width=16, heads=2, dropout=0.0).eval()
    short = torch.tensor([[3, 10, 11, 12]])
    padded = torch.tensor([[3, 10, 11, 12, 0, 0, 0]])
    assert torch.allclose(encoder(short), encoder(padded), atol=1e-5)


def test_layer_groups_and_classifier():
    encoder = TextEncoder(vocab_size=VOCAB, max_length=16, width=16, depth=3, heads=2)
    names = [name for name, _ in encoder.layer_groups()]
    assert names == ["embeddings", "block0", "block1", "block2", "final_norm"]
    classifier = Classifier(encoder, num_classes=3)
    assert classifier(_ids()).shape == (8, 3)
    assert [n for n, _ in classifier.layer_groups()][-1] == "head"


def test_bad_inputs_and_configs():
    encoder = TextEncoder(vocab_size=VOCAB, max_length=8, width=16, heads=2)
    with pytest.raises(MtkitError, match="longer than max_length=8"):
        encoder(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(MtkitError, match="another tokenizer"):
        encoder(torch.full((2, 4), VOCAB))
    with pytest.raises(MtkitError, match="int64"):
        encoder(torch.zeros(2, 4))
    with pytest.raises(MtkitError, match="divisible"):
        TextEncoder(width=30, heads=4)
    with pytest.raises(MtkitError, match="pooling"):
        TextEncoder(pooling="max")


def test_masking_follows_the_80_10_10_rule_and_spares_specials():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 1000, (400, 64), generator=generator)
    ids[:, 0] = 3
    ids[:, 50:] = 0
    inputs, targets = mask_tokens(ids, mask_id=2, vocab_size=1000, rate=0.15, generator=generator)
    chosen = targets != -100
    assert not chosen[:, 0].any() and not chosen[:, 50:].any()
    assert torch.equal(targets[chosen], ids[chosen])
    assert chosen[:, 1:50].float().mean().item() == pytest.approx(0.15, abs=0.01)
    masked = (inputs[chosen] == 2).float().mean().item()
    unchanged = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.02)
    assert unchanged == pytest.approx(0.1, abs=0.02)
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert inputs.min() >= 0 and (inputs[chosen & (inputs != 2)] >= 7).all()


def test_loss_ignores_unchosen_positions():
    logits = torch.randn(2, 5, VOCAB)
    targets = torch.full((2, 5), -100)
    targets[0, 1] = 7
    changed = logits.clone()
    changed[:, [0, 2, 3, 4]] += 10 * torch.randn(2, 4, VOCAB)
    changed[1] += 5
    assert masked_token_loss(logits, targets) == pytest.approx(
        masked_token_loss(changed, targets).item()
    )


def test_masked_token_model_ties_output_to_embeddings():
    encoder = TextEncoder(vocab_size=VOCAB, max_length=16, width=16, heads=2)
    model = MaskedTokenModel(encoder)
    assert model(_ids()).shape == (8, 12, VOCAB)
    token_vectors = encoder.embeddings.token.weight
    assert sum(p is token_vectors for p in model.parameters()) == 1  # one shared tensor


def test_masking_rejects_bad_rates():
    with pytest.raises(MtkitError, match="fraction"):
        mask_tokens(_ids(), mask_id=2, vocab_size=VOCAB, rate=0.0)


def test_bag_of_words_autoencoder():
    model = BagOfWordsAutoencoder(vocab_size=VOCAB, hidden_size=16, latent_size=4)
    ids = _ids()
    bag = model.bag(ids)
    assert bag.shape == (8, VOCAB) and bag[:, :4].sum() == 0
    assert bag[0, ids[0, 1]] == 1.0
    assert model.encoder(ids).shape == (8, 4)
    assert model.training_loss(ids).item() > 0
    assert Classifier(model.encoder, num_classes=3)(ids).shape == (8, 3)
    with pytest.raises(MtkitError, match="latent_size"):
        BagOfWordsAutoencoder(latent_size=0)


def test_loss_on_chosen_positions_matches_the_full_logits():
    torch.manual_seed(0)
    model = MaskedTokenModel(TextEncoder(vocab_size=VOCAB, max_length=16, width=16, heads=2))
    model.eval()
    ids = _ids()
    inputs, targets = mask_tokens(ids, mask_id=2, vocab_size=VOCAB, rate=0.3)
    loss, accuracy = model.loss(inputs, targets)
    assert loss.item() == pytest.approx(masked_token_loss(model(inputs), targets).item(), rel=1e-5)
    assert 0.0 <= accuracy.item() <= 1.0


def test_fresh_model_starts_near_the_uniform_guess():
    torch.manual_seed(0)
    model = MaskedTokenModel(TextEncoder(vocab_size=1000, max_length=16, width=64, heads=4))
    ids = torch.randint(7, 1000, (16, 12))
    loss, _ = model.loss(*mask_tokens(ids, mask_id=2, vocab_size=1000, rate=0.5))
    assert loss.item() == pytest.approx(math.log(1000), rel=0.1)


def test_trim_padding_drops_only_all_padding_columns():
    from mtkit.models.text import trim_padding

    ids = torch.tensor([[3, 9, 0, 0, 0], [3, 9, 9, 0, 0]])
    assert trim_padding(ids).tolist() == [[3, 9, 0], [3, 9, 9]]
    assert trim_padding(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 1)


def test_trimmed_padding_changes_neither_features_nor_masked_loss():
    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=VOCAB, max_length=16, width=16, heads=2, dropout=0.0).eval()
    model = MaskedTokenModel(encoder).eval()
    ids = _ids(count=4, length=8)
    ids[:, 6:] = 0
    long = torch.cat([ids, torch.zeros(4, 8, dtype=torch.long)], dim=1)
    inputs, targets = mask_tokens(
        long, mask_id=2, vocab_size=VOCAB, rate=0.5, generator=torch.Generator().manual_seed(1)
    )
    loss_long, _ = model.loss(inputs, targets)
    loss_short, _ = model.loss(inputs[:, :8], targets[:, :8])
    assert torch.allclose(loss_long, loss_short, atol=1e-6)
    assert torch.allclose(encoder(long), encoder(ids), atol=1e-6)


def test_prompt_tuning_trains_the_prompt_vectors_and_nothing_else_in_the_encoder():
    from mtkit.stages.adapters import PromptTuning, freeze_base, train_adapter

    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=VOCAB, max_length=16, width=16, heads=2)
    encoder.prompt = PromptTuning(16, num_prompts=3)
    classifier = Classifier(encoder, num_classes=2)
    freeze_base(classifier)
    classifier.head.requires_grad_(True)
    assert "prompt" in [name for name, _ in encoder.layer_groups()]
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    ids = _ids(count=16)
    train_adapter(classifier, (ids, torch.arange(16) % 2), epochs=3, lr=1e-2, progress=False)
    moved = {k for k, v in classifier.state_dict().items() if not torch.equal(before[k], v)}
    assert moved == {"encoder.prompt.adapters.default.vectors", "head.weight", "head.bias"}


def test_the_encoder_says_where_adapters_go():
    import copy

    from mtkit.stages.adapters import add_adapters, add_lora

    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=VOCAB, max_length=16, width=16, depth=2, heads=2)
    assert encoder.token_embedding is encoder.embeddings.token

    def classifier():
        torch.manual_seed(1)  # the same head every time
        return Classifier(copy.deepcopy(encoder), num_classes=2).eval()

    ids = _ids()
    with torch.no_grad():
        before = classifier()(ids)
    lora = classifier()
    chosen = add_lora(lora, [f"encoder.{target}" for target in encoder.lora_targets])
    assert sorted(chosen) == [
        "encoder.blocks.0.attention.query",
        "encoder.blocks.0.attention.value",
        "encoder.blocks.1.attention.query",
        "encoder.blocks.1.attention.value",
    ]
    bottleneck = classifier()
    places = [f"encoder.{place}" for place in encoder.bottleneck_places]
    assert add_adapters(bottleneck, places, size=4) == [
        "encoder.blocks.0.attention.out",
        "encoder.blocks.1.attention.out",
        "encoder.blocks.0.mlp",
        "encoder.blocks.1.mlp",
    ]
    with torch.no_grad():  # fresh adapters add nothing (LoRA's B and the up-projections are 0)
        for adapted in (lora, bottleneck):
            assert torch.allclose(adapted(ids), before, atol=1e-6)
