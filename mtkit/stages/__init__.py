"""The training stages, in the order data flows through them:

pretrain.py    learn from unlabelled data: autoencoders, masked tokens, bag of words
finetune.py    a Classifier on a pretrained encoder learns from a few labels (strategies)
adapters/      what can be added to a frozen encoder instead: LoRA, bottleneck, prompt, heads
method.py      a strategy × an addition: the one place that attaches a method to a classifier
selftrain.py   learn from the classifier's own confident guesses on the unlabelled pool
consistency.py the same guesses at every step, made on easy views and learnt on hard ones
contrastive.py pretrain an image encoder to match two distorted views of each image (SimCLR)
augment.py     the distortions: small shifts and rotations, and strong ones for the above
shift.py       adapt a trained classifier to a shifted domain (naive, rehearsal, adapter)
setfit.py      few-shot text: pull same-class sentence embeddings together, push others apart
domain_adapt.py  continue a pretrained text model's masked-token training on in-domain text
distill.py     a small student learns a large teacher's softened predictions
lr_find.py     the learning-rate range test: a sweep on a copy of the model, and a suggestion
"""

from mtkit.stages import (  # noqa: F401
    adapters,
    augment,
    consistency,
    contrastive,
    distill,
    domain_adapt,
    finetune,
    lr_find,
    method,
    pretrain,
    selftrain,
    setfit,
    shift,
)
