"""Words -> tokens -> per-layer word vectors and per-word surprisal.

``word_features(model, tokenizer, words, pooling="last", context="passage",
layers=None, context_size=None, min_context=None, ...)`` returns every hidden
state of every word, (n_layers + 1, n_words, dim), index 0 the embeddings;
``word_surprisal(model, tokenizer, words)`` the surprisal of every word in
bits. Both read the words joined by single spaces, with no special tokens,
assign tokens to words through the tokenizer's offset mapping
(``align_words``), run jit-compiled, batched forward passes and can cache
their results on disk (``cache_dir``). ``devices="auto"`` shards every batch
of windows over all local devices (data parallel; ``batch_mesh`` builds the
``("batch", "model")`` mesh that also holds tensor-parallel weights).
"""

from jaxalign.features._align import Alignment, align_words
from jaxalign.features._extract import FeatureInfo, word_features
from jaxalign.features._parallel import batch_mesh
from jaxalign.features._surprisal import word_surprisal

__all__ = ["Alignment", "FeatureInfo", "align_words", "batch_mesh", "word_features", "word_surprisal"]
