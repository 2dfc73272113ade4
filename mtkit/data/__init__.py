"""Datasets as plain tensors and lists: images, texts, few-label splits and a tokenizer."""

from mtkit.data.images import DatasetUnavailable, ImageDataset, load_images
from mtkit.data.length_buckets import LengthBuckets
from mtkit.data.splits import FewLabelSplit, few_labels
from mtkit.data.text import TextDataset, load_text
from mtkit.data.tokenizer import Tokenizer

__all__ = [
    "DatasetUnavailable",
    "FewLabelSplit",
    "ImageDataset",
    "LengthBuckets",
    "TextDataset",
    "Tokenizer",
    "few_labels",
    "load_images",
    "load_text",
]
