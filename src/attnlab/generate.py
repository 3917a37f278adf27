"""Text generation: greedy, temperature, top-k and top-p sampling with a KV cache; beam search.

A decoder predicts one token at a time. Without a cache each step re-reads the whole context
(quadratic work); with the ``DecodingCache`` each step feeds only the newest token and attends to
the keys and values kept from earlier steps (linear work), which is why it is on by default. The
cached and uncached paths see exactly the same context windows, so they produce the same tokens.

When the text outgrows the model's ``max_len`` positions, the context slides: it is cut to the last
``max_len // 2`` tokens and the cache rebuilt from them (halving, rather than dropping one token per
step, so a rebuild happens only every ``max_len / 2`` tokens).

``stream`` is a generator: callers print each piece as it arrives; with ``top_probs=N`` every step
also reports the model's N most likely next tokens and their probabilities. ``generate_batch``
continues several prompts at once, left-padded to one length (positions follow the attention mask).

At batch 1 a step of a small model is mostly overhead around memory-bound matrix-vector products, so
the loop does the least it can per token (the prompt is checked once, logits are computed for the
last position only), and ``compile=True`` runs each step as one compiled graph (``compiled_step``).

Devices: every function here works on the device the model is on (``model.to("cuda")``): its input
tensors and KV cache are created there. Sampling draws on the CPU from the step's logits (one small
copy per token), with a CPU generator, so a seed gives the same choices on every device (up to the
logits' own rounding differences).
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.models.mode import eval_mode
from attnlab.models.stack import attention_backend, check_token_ids, positions_for, set_attention_backend
from attnlab.nn import padding_mask
from attnlab.nn.hooks import HookWatch
from attnlab.tokenizers import Tokenizer


class GenerationError(ValueError):
    """Bad generation settings or input; the message names the problem."""


# Temperatures below this are greedy decoding (vLLM's rule, ``_SAMPLING_EPS``): dividing logits by
# such a number overflows (float32 below ~3e-37, bfloat16/float16 far sooner) and the tempered
# distribution is already one-hot in all but exact ties, which greedy breaks by the lowest id.
GREEDY_BELOW = 1e-5
SEED_RANGE = 2**64  # torch.Generator.manual_seed takes seeds in [0, 2**64)


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` if it is an integer in ``[low, high]`` (no upper bound when ``high`` is None).

    Raises ``GenerationError`` naming the setting and its range for anything else: a float
    (even ``2.0``), a bool, a string, None. Accepts numpy integers (returns a Python ``int``).
    """
    span = f"[{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GenerationError(f"{name} must be an integer {span}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise GenerationError(f"{name} must be an integer {span}, got {value}")
    return int(value)


def check_real(name: str, value: object, low: float, high: float = math.inf, *, low_open: bool = False) -> float:
    """``value`` as a float if it is a finite number in ``[low, high]`` (``(low, high]`` when ``low_open``).

    Raises ``GenerationError`` naming the setting and its range for NaN, +-inf, a bool, a string, None.
    """
    span = f"{'(' if low_open else '['}{low:g}, {high:g}]" if high != math.inf else (
        f"> {low:g}" if low_open else f">= {low:g}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GenerationError(f"{name} must be a finite number {span}, got {value!r}")
    x = float(value)
    if not math.isfinite(x) or x < low or (low_open and x == low) or x > high:
        raise GenerationError(f"{name} must be a finite number {span}, got {x}")
    return x


def check_seed(seed: object) -> int | None:
    """``seed`` if it is None (a random seed) or an integer in ``[0, 2**64)``; else ``GenerationError``."""
    return None if seed is None else check_int("seed", seed, 0, SEED_RANGE - 1)


@dataclass(frozen=True)
class Sampling:
    """How to pick each next token.

    ``temperature``: a finite number >= 0; 0, and anything below ``GREEDY_BELOW`` (its limit), is
    greedy (the most likely token, the lowest id among ties). ``top_k``: an integer >= 0 (0: off).
    ``top_p``: a finite number in (0, 1] (1: off). Anything else raises ``GenerationError``.
    """

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", check_real("temperature", self.temperature, 0.0))
        object.__setattr__(self, "top_k", check_int("top_k", self.top_k, 0))
        object.__setattr__(self, "top_p", check_real("top_p", self.top_p, 0.0, 1.0, low_open=True))

    @property
    def greedy(self) -> bool:
        """True when every choice is the most likely token (temperature 0 or below ``GREEDY_BELOW``)."""
        return self.temperature < GREEDY_BELOW


@dataclass
class Step:
    """One generated token: its id, the new text it adds (may be empty mid-character) and, when
    asked for, the top next-token candidates ``(id, label, probability)`` the choice was made from."""

    token_id: int
    text: str
    top: list[tuple[int, str, float]] | None = None


def sampling_distribution(logits: Tensor, sampling: Sampling) -> Tensor:
    """The float32 ``(vocab,)`` distribution ``sample_next`` draws from: temperature, then top-k,
    then top-p, for logits of any floating dtype (float32, bfloat16, float16, float64).

    Greedy decoding (``sampling.greedy``) puts all mass on the highest logit (the lowest id among
    ties). Otherwise the arithmetic is float64 and shifted by the maximum, so no temperature
    overflows; the most likely token always survives top-p. The walkthrough shows this
    distribution beside the unfiltered one, so both come from the same code.
    """
    if sampling.greedy:
        return torch.zeros_like(logits, dtype=torch.float32).index_fill_(0, logits.argmax().view(1), 1.0)
    logits = logits.double()
    logits = (logits - logits.max()) / sampling.temperature
    if 0 < sampling.top_k < logits.numel():
        kth = torch.topk(logits, sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, stable=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        outside = probs.cumsum(-1) - probs >= sampling.top_p  # mass above this token already covers p
        outside[0] = False  # the most likely token always stays, however small p is
        logits = logits.index_fill(0, order[outside], -math.inf)
    return torch.softmax(logits, dim=-1).float()


def sample_next(logits: Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> int:
    """Choose a token from ``(vocab,)`` logits: temperature, then top-k, then top-p (nucleus).

    Draws from ``sampling_distribution(logits, sampling)``; greedy settings return its one token.
    """
    if sampling.greedy:
        return int(logits.argmax())
    return int(torch.multinomial(sampling_distribution(logits, sampling), 1, generator=generator))


def tempered_distribution(logits: Tensor, sampling: Sampling) -> Tensor:
    """The float32 ``(vocab,)`` softmax of ``logits / temperature`` before top-k and top-p (at
    temperature 1 when ``sampling.greedy``, whose own distribution is one-hot): the candidates a
    step reports. Computed in float64, so no temperature overflows whatever the logits' dtype."""
    temperature = 1.0 if sampling.greedy else sampling.temperature
    return torch.softmax(logits.double() / temperature, dim=-1).float()


def _top(logits: Tensor, n: int, sampling: Sampling, tokenizer: Tokenizer | None) -> list[tuple[int, str, float]]:
    """The ``n`` most likely tokens of ``tempered_distribution``."""
    probs = tempered_distribution(logits, sampling)
    values, ids = torch.topk(probs, min(n, probs.numel()))
    labels = tokenizer.tokens(ids.tolist()) if tokenizer is not None else [str(i) for i in ids.tolist()]
    return [(int(i), label, float(p)) for i, label, p in zip(ids, labels, values, strict=True)]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _window_start(n_tokens: int, start: int, max_len: int) -> int:
    """Where the context begins: unchanged while it fits, else the last ``max_len // 2`` tokens."""
    if n_tokens - start > max_len:
        return n_tokens - max(1, max_len // 2)
    return start


# What changes from one decoding step to the next: the length of every layer's KV cache.
_CACHE_LENGTHS = r"L\['cache'\]\.layers\[\d+\]\.self_attn\.length"
_compiled: weakref.WeakKeyDictionary[nn.Module, Callable[..., Tensor]] = weakref.WeakKeyDictionary()


def compiled_step(model: nn.Module, token: Tensor, position: Tensor, cache: Any) -> Callable[..., Tensor]:
    """A one-token step for ``model`` and this cache layout, ready to call as
    ``step(model, token, position, cache=cache, last_only=True)`` for every step of one generation:
    ``type(model).logits_at`` compiled (``_compiled_graph``) while no hook is attached to the model,
    and run eagerly, hooks and all, during any call when one is.

    Hooks: a compiled graph keeps what the hooks attached when it was traced did, and
    ``torch.compile`` does not re-check hooks before a call, so a hook attached later would be
    silently ignored (and a removed one kept). The step therefore looks before every call
    (``HookWatch``: ~2 us when nothing changed, against a step of milliseconds): with a hook attached anywhere in
    the model, or a global module hook, that call is the eager ``logits_at`` (so the hook fires once
    per step, as it would without ``compile``); once the hooks are gone the hook-free graph runs
    again. Graphs are only ever traced with no hook attached.
    """
    watch = HookWatch(model)
    graph: Callable[..., Tensor] | None = None

    def step(m: nn.Module, tok: Tensor, pos: Tensor, *, cache: Any, last_only: bool = True) -> Tensor:
        nonlocal graph
        if watch.hooked():
            return type(m).logits_at(m, tok, pos, cache=cache, last_only=last_only)
        if graph is None:
            graph = _compiled_graph(m, tok, pos, cache)
        return graph(m, tok, pos, cache=cache, last_only=last_only)

    return step


def _compiled_graph(model: nn.Module, token: Tensor, position: Tensor, cache: Any) -> Callable[..., Tensor]:
    """``type(model).logits_at`` compiled for this model (with no hook attached) and this cache
    layout, called as ``compiled_step``'s step is.

    Everything is compiled for fixed shapes except the KV-cache lengths (``dynamic_sources``), so one
    graph serves every step (each reads a cache one position longer) and every prompt length, and
    compiles faster than an all-dynamic graph; the first use takes tens of seconds on a small CPU.

    A batch-1 step multiplies a single row by each weight matrix: memory-bound work that MKL's
    matrix-product kernels do at a fraction of this CPU's read bandwidth. Inductor's
    ``decompose_mm_pass`` rewrites such products (one row, sides up to 2048) as a multiply and a row
    sum, which it compiles, fused with the layer norms and activations around them, into vectorised
    loops that stream each weight once. The step is compiled, and must be called, with the model's
    attention on the ``math`` backend (``stream_ids`` switches it for the one-token steps and back):
    for one query the spelled-out formula compiles into the loops around it, while the fused kernel
    would stay an opaque call whose fixed cost (~0.1 ms per layer on a small CPU) outweighs the work.

    Guards: a plain ``torch.compile`` function re-checks, before every call, ~1,200 facts about the
    model and the cache (types, hooks, shapes), ~0.4 ms per token here, over a tenth of a step. The
    step is instead compiled ahead of time (``aot_compile``) and checked here, once per generation
    (and again when a new cache is built): the model, the cache and the shapes of ``token`` and
    ``position`` are then fixed, and only the cache lengths change, within the range the graph was
    compiled for. A failed check (another dtype, a new cache size) compiles again. Hooks are not among
    the facts checked: ``compiled_step`` never calls the graph while one is attached.
    """
    args, kwargs = (model, token, position), {"cache": cache, "last_only": True}
    step = _compiled.get(model)
    check = getattr(step, "guard_check", None)
    if step is not None and (check is None or check(*args, **kwargs)):
        return step
    # The one-row rewrite is for CPU kernels; a GPU runs its own matrix-vector kernels.
    options = {"post_grad_fusion_options": {"decompose_mm_pass": {}}} if token.device.type == "cpu" else {}
    compiled = torch.compile(type(model).logits_at, fullgraph=True, dynamic=False, options=options)
    import torch._inductor.config as inductor_config

    if hasattr(compiled, "aot_compile") and not inductor_config.force_disable_caches:  # it needs the caches
        with torch.compiler.config.patch(dynamic_sources=_CACHE_LENGTHS):
            step = compiled.aot_compile((args, kwargs))
        step.disable_guard_check()  # checked above, once per generation
    else:  # older torch, or caches disabled: guards checked on every call
        def step(*a: Any, **kw: Any) -> Tensor:
            with torch.compiler.config.patch(dynamic_sources=_CACHE_LENGTHS):
                return compiled(*a, **kw)
    _compiled[model] = step
    return step


def _check_sampling(sampling: object) -> Sampling:
    if sampling is None:
        return Sampling()
    if not isinstance(sampling, Sampling):
        raise GenerationError(f"sampling must be a Sampling(temperature=..., top_k=..., top_p=...), got {sampling!r}")
    return sampling


def check_decoding(
    *, sampling: object, max_new_tokens: object, seed: object, top_probs: object = 0,
) -> tuple[Sampling, int, int | None, int]:
    """The settings of every decoder-only loop (``stream``, ``stream_ids``, ``generate_batch_ids``),
    checked in this one place: ``sampling`` None or a ``Sampling``, ``max_new_tokens`` an integer >= 0,
    ``seed`` None or an integer in [0, 2**64), ``top_probs`` an integer >= 0. Returns them as
    ``(sampling, max_new_tokens, seed, top_probs)`` (None sampling: the default ``Sampling()``);
    anything else raises ``GenerationError`` naming the setting."""
    return (_check_sampling(sampling), check_int("max_new_tokens", max_new_tokens, 0), check_seed(seed),
            check_int("top_probs", top_probs, 0))


def check_prompt_ids(prompt_ids: object, what: str = "the prompt") -> list[int]:
    """``prompt_ids`` as a list of ints if it is a non-empty sequence of integers (numpy integers
    too, not bools or floats); else ``GenerationError``. The vocabulary range is the model's check."""
    if not isinstance(prompt_ids, Sequence) or isinstance(prompt_ids, str):
        raise GenerationError(f"{what} must be a list of token ids, got {type(prompt_ids).__name__}")
    if len(prompt_ids) == 0:
        raise GenerationError(f"{what} is empty: give at least one token to continue from")
    bad = [i for i in prompt_ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
    if bad:
        raise GenerationError(f"{what} must hold integer token ids, got {bad[0]!r}")
    return [int(i) for i in prompt_ids]


@torch.inference_mode()
def stream_ids(
    model: nn.Module,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    top_probs: int = 0,
    tokenizer: Tokenizer | None = None,
    compile: bool = False,
) -> Iterator[tuple[int, list[tuple[int, str, float]] | None]]:
    """Yield ``(token_id, top)`` for each new token of a decoder-only model (no text handling).

    The prompt is checked once; every later step feeds back a token the model itself chose, through
    ``DecoderLM.logits_at`` without per-step input checks. ``compile=True`` runs each one-token step
    through ``compiled_step`` (the prompt pass stays eager); the first call pays the
    compilation. Its logits can differ from the eager ones in the last bits (another summation
    order), so a near-tie may rarely resolve the other way.

    Settings: ``max_new_tokens`` an integer >= 0, ``seed`` None or an integer in [0, 2**64),
    ``top_probs`` an integer >= 0, ``sampling`` a ``Sampling``; anything else (and an empty or
    out-of-vocabulary prompt) raises ``GenerationError`` before any work.
    """
    sampling, max_new_tokens, seed, top_probs = check_decoding(
        sampling=sampling, max_new_tokens=max_new_tokens, seed=seed, top_probs=top_probs)
    ids = check_prompt_ids(prompt_ids)
    if compile and not use_cache:
        raise GenerationError("compile=True compiles the cached one-token step: it needs use_cache=True")
    max_len = model.config.max_len
    start = max(0, len(ids) - max_len)
    check_token_ids(torch.tensor([ids[start:]]), model.config, "prompt_ids")
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    device = model_device(model)
    positions = torch.arange(max_len, device=device)
    one = torch.empty((1, 1), dtype=torch.long, device=device)  # a step's token and position, refilled in place
    pos = torch.empty((1,), dtype=torch.long, device=device)
    # The compiled step gets one spare slot: its cache is then never full, and the compiled graph
    # never meets "the keys are the whole buffer", a case it would compile a second graph for.
    cache_len = max_len + 1 if compile else max_len
    backend = attention_backend(model)

    def read_window() -> tuple[Any, Tensor, Callable[..., Tensor]]:
        """The whole window at once (the prompt, or what is kept after a slide) into a fresh cache:
        the cache, the next-token logits and the one-token step that continues from them."""
        cache = model.new_cache(cache_len) if use_cache else None
        set_attention_backend(model, backend)  # the many-token pass on the model's own backend
        logits = model.logits_at(torch.tensor([ids[start:]], device=device), positions[: len(ids) - start],
                                 cache=cache, last_only=True)[0, -1].cpu()
        step: Callable[..., Tensor] = type(model).logits_at
        if compile:  # the one-token steps: the formula, which compiles into the graph (compiled_step)
            set_attention_backend(model, "math")
            step = compiled_step(model, one, pos, cache)
        return cache, logits, step

    with eval_mode(model):
        try:
            cache, logits, step = read_window()
            for _ in range(max_new_tokens):
                token = sample_next(logits, sampling, generator)
                yield token, (_top(logits, top_probs, sampling, tokenizer) if top_probs else None)
                ids.append(token)
                new_start = _window_start(len(ids), start, max_len)
                if cache is None or new_start != start:  # no cache, or the window slid: rebuild from the kept tokens
                    start = new_start
                    cache, logits, step = read_window()
                else:
                    one.fill_(token)
                    pos.fill_(len(ids) - start - 1)
                    logits = step(model, one, pos, cache=cache, last_only=True)[0, -1].cpu()
        finally:
            set_attention_backend(model, backend)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop string (not printed yet)."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


def stream(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str | Sequence[int],
    *,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    stop: Sequence[str] = (),
    seed: int | None = None,
    use_cache: bool = True,
    top_probs: int = 0,
    compile: bool = False,
) -> Iterator[Step]:
    """Continue ``prompt``, yielding each token as soon as it is chosen.

    ``prompt`` is text, encoded literally (a typed ``<|im_end|>`` stays text), or token ids built
    by the caller, e.g. ``smollm2.chat_ids`` (a chat template's control tokens, by id).

    Text is released only when it is complete: a byte-level token that ends mid-character, or text
    that might be the beginning of a stop string, waits for the next token. Generation ends after
    ``max_new_tokens`` or at the first stop string (which is not included). ``use_cache`` and
    ``compile`` are ``stream_ids``'s.
    """
    # every setting before the prompt is encoded (stream_ids checks again)
    check_decoding(sampling=sampling, max_new_tokens=max_new_tokens, seed=seed, top_probs=top_probs)
    if isinstance(prompt, str):
        prompt_ids = tokenizer.encode(prompt)
    elif isinstance(prompt, Sequence) and all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in prompt):
        prompt_ids = [int(i) for i in prompt]
    else:
        raise GenerationError(f"the prompt must be text or a list of token ids, got {type(prompt).__name__}")
    if not prompt_ids:
        raise GenerationError("the prompt is empty: give at least one character to continue from")
    generated: list[int] = []
    emitted = 0
    for token, top in stream_ids(
        model, prompt_ids, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed,
        use_cache=use_cache, top_probs=top_probs, tokenizer=tokenizer, compile=compile,
    ):
        generated.append(token)
        text = tokenizer.decode(generated)
        cut = min((i for i in (text.find(s, max(0, emitted - len(s))) for s in stop if s) if i >= 0), default=-1)
        if cut >= 0:
            yield Step(token, text[emitted:cut], top)
            return
        ready = len(text) - _held_back(text, stop)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its remaining bytes
            ready = min(ready, len(text.rstrip("\ufffd")))
        piece = text[emitted:ready] if ready > emitted else ""
        emitted = max(emitted, ready)
        yield Step(token, piece, top)
    text = tokenizer.decode(generated)
    if len(text) > emitted:  # what was held back at the end
        yield Step(generated[-1], text[emitted:], None)


def generate(model: nn.Module, tokenizer: Tokenizer, prompt: str | Sequence[int], **kwargs) -> str:
    """The whole continuation as one string (``stream`` joined)."""
    return "".join(step.text for step in stream(model, tokenizer, prompt, **kwargs))


# ------------------------------------------------------------------------------ batches of prompts


@torch.inference_mode()
def generate_batch_ids(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    seed: int | None = None,
) -> list[list[int]]:
    """``max_new_tokens`` new token ids for each prompt of a decoder-only model, all rows at once.

    Prompts of different lengths are padded on the left, so every row's next token is in the last
    column; the attention mask hides the padding and positions follow it (each row's first real
    token is position 0), and one KV cache serves the batch. Each row draws from its own generator,
    seeded with ``seed``, so row ``i`` is what ``stream_ids(model, prompts[i], seed=seed)`` gives
    alone (for greedy decoding too; up to ties within float rounding). The context does not slide:
    the longest prompt plus ``max_new_tokens`` must fit in ``max_len``, else ``GenerationError``;
    ids outside the vocabulary are an ``InputError``. Settings and prompts are checked as
    ``stream_ids`` checks them (``check_decoding``, ``check_prompt_ids``): what one refuses, so does the
    other, with a ``GenerationError`` naming the setting, before any work.
    """
    sampling, max_new_tokens, seed, _ = check_decoding(sampling=sampling, max_new_tokens=max_new_tokens, seed=seed)
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise GenerationError("give at least one prompt, each a list of at least one token id")
    prompts = [check_prompt_ids(p, f"prompt {i}") for i, p in enumerate(prompts)]
    width = max(len(p) for p in prompts)
    max_len = model.config.max_len
    if width + max_new_tokens > max_len:
        raise GenerationError(
            f"the longest prompt ({width} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"{max_len} positions; batched generation does not slide the context (use stream_ids per prompt)"
        )
    batch = len(prompts)
    device = model_device(model)
    ids = torch.zeros((batch, width), dtype=torch.long)  # padding id 0: masked out, never read
    mask = torch.zeros((batch, width + max_new_tokens), dtype=torch.bool)  # grows one column per step
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        mask[i, width - len(prompt):] = True
    check_token_ids(ids, model.config, "prompt_ids")
    ids, mask = ids.to(device), mask.to(device)
    generators = []
    for _ in range(batch):
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
        generators.append(generator)
    with eval_mode(model):
        cache = model.new_cache(width + max_new_tokens)
        positions = positions_for(ids, model.config, attention_mask=mask[:, :width])  # (batch, width)
        logits = model.logits_at(ids, positions, mask=padding_mask(mask[:, :width]), cache=cache, last_only=True).cpu()
        out: list[list[int]] = [[] for _ in range(batch)]
        for step in range(max_new_tokens):
            tokens = [sample_next(logits[i, -1], sampling, generators[i]) for i in range(batch)]
            for row, token in zip(out, tokens, strict=True):
                row.append(token)
            if step + 1 == max_new_tokens:
                break
            positions = positions[:, -1:] + 1  # (batch, 1): one past each row's last token
            seen = width + step + 1  # cached tokens after this step
            logits = model.logits_at(torch.tensor(tokens, device=device)[:, None], positions,
                                     mask=padding_mask(mask[:, :seen]), cache=cache, last_only=True).cpu()
        return out


def generate_batch(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    stop: Sequence[str] = (),
    seed: int | None = None,
) -> list[str]:
    """The continuation of each prompt (``generate_batch_ids``, decoded), cut at its first stop string.

    Row ``i`` equals ``generate(model, tokenizer, prompts[i], seed=seed, ...)`` whenever that one
    does not need to slide its context. Raises ``GenerationError`` for an empty prompt.
    """
    prompt_ids = [tokenizer.encode(p) for p in prompts]
    if any(not ids for ids in prompt_ids):
        raise GenerationError("a prompt is empty: give at least one character to continue from")
    texts = []
    for ids in generate_batch_ids(model, prompt_ids, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed):
        text = tokenizer.decode(ids)
        cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
        texts.append(text[:cut])
    return texts


# ------------------------------------------------------------------------------ encoder-decoder


@torch.inference_mode()
def translate_ids(
    model: nn.Module,
    src_ids: Sequence[int],
    *,
    bos_id: int,
    eos_id: int,
    max_new_tokens: int = 100,
    beam_size: int = 1,
    length_penalty: float = 0.6,
) -> tuple[list[int], float]:
    """Greedy (``beam_size=1``) or beam search decoding of an ``EncoderDecoder``.

    Returns the target ids (without BOS/EOS) and their total log-probability. Beam search keeps the
    ``beam_size`` best partial translations; finished ones are ranked by log-probability divided by
    ``((5 + length) / 6) ** length_penalty`` (Wu et al. 2016), so short outputs are not favoured
    merely for having fewer factors below one.

    Settings: ``beam_size`` an integer in [1, vocab_size], ``max_new_tokens`` an integer >= 0,
    ``length_penalty`` a finite number >= 0, ``bos_id``/``eos_id`` ids of the vocabulary; anything
    else raises ``GenerationError``.
    """
    vocab = model.config.vocab_size
    beam_size = check_int("beam_size", beam_size, 1, vocab)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
    length_penalty = check_real("length_penalty", length_penalty, 0.0)
    bos_id, eos_id = check_int("bos_id", bos_id, 0, vocab - 1), check_int("eos_id", eos_id, 0, vocab - 1)
    if not src_ids:
        raise GenerationError("the source is empty")
    with eval_mode(model):
        max_steps = min(max_new_tokens, model.config.max_len)  # each step writes one token (or ends)
        device = model_device(model)
        memory = model.encode(torch.tensor([list(src_ids)], device=device))
        memory = memory.expand(beam_size, -1, -1).contiguous()
        cache = model.new_cache()
        beams = torch.full((beam_size, 1), bos_id, dtype=torch.long, device=device)
        scores = torch.zeros(beam_size, device=device)
        scores[1:] = -math.inf  # all beams start identical: expand only the first
        finished: list[tuple[float, list[int], float]] = []
        for _ in range(max_steps):
            logp = torch.log_softmax(model.decode(beams[:, -1:], memory, cache=cache)[:, -1].float(), dim=-1)
            cand = (scores[:, None] + logp).reshape(-1)  # (beam * vocab)
            top_scores, top_idx = cand.topk(min(2 * beam_size, cand.numel()))
            vocab = logp.shape[-1]
            keep_beam, keep_tok, keep_score = [], [], []
            for s, i in zip(top_scores.tolist(), top_idx.tolist(), strict=True):
                if s == -math.inf:
                    break
                b, t = divmod(i, vocab)
                if t == eos_id:
                    out = beams[b, 1:].tolist()
                    finished.append((s / ((5 + len(out) + 1) / 6) ** length_penalty, out, s))
                else:
                    keep_beam.append(b), keep_tok.append(t), keep_score.append(s)
                if len(keep_beam) == beam_size:
                    break
            if len(finished) >= beam_size or not keep_beam:
                break
            while len(keep_beam) < beam_size:  # pad with dead beams so shapes stay fixed
                keep_beam.append(keep_beam[0]), keep_tok.append(keep_tok[0]), keep_score.append(-math.inf)
            index = torch.tensor(keep_beam, device=device)
            cache.reorder(index)
            beams = torch.cat([beams[index], torch.tensor(keep_tok, device=device)[:, None]], dim=1)
            scores = torch.tensor(keep_score, device=device)
        if not finished:  # ran out of steps: take the best unfinished translation
            b = int(scores.argmax())
            return beams[b, 1:].tolist(), float(scores[b])
        _, out, logprob = max(finished, key=lambda f: f[0])
        return out, logprob
