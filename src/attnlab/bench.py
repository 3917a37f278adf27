"""Side-by-side speed against Hugging Face ``transformers``, same config and same weights, one run.

(a) Training step (forward, loss, backward, AdamW) of our ``DecoderLM`` vs ``GPT2LMHeadModel``,
both with fused SDPA attention, in float32 and with bfloat16 autocast; the per-step losses of every
variant are kept, so the bf16 loss trajectory can be compared with fp32 on the same batches.
(b) Inference of our ``EncoderModel`` vs ``BertModel`` in the shape of all-MiniLM-L6-v2.

Variants run round-robin (one step of each, then the next step of each), so load from other
processes on a shared machine falls on all of them alike; figures are medians over the timed steps
after warm-up. ``device`` runs both on a GPU (``cuda``, ``mps``) instead of the CPU; every timed call
ends by waiting for the device. ``transformers`` is needed (it is a test/dev dependency, not a runtime one).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.device import choose_precision, resolve_device


@dataclass(frozen=True)
class Sizes:
    """The benchmark shapes; ``FULL`` is the one the README quotes."""

    layers: int = 6
    width: int = 384
    heads: int = 6
    vocab: int = 65
    batch: int = 16
    seq: int = 256
    enc_layers: int = 6
    enc_width: int = 384
    enc_heads: int = 12
    enc_ff: int = 1536
    enc_vocab: int = 30522
    enc_batch: int = 32
    enc_seq: int = 128
    warmup: int = 2
    repeats: int = 8


FULL = Sizes()
QUICK = Sizes(layers=2, width=128, heads=4, batch=8, seq=128, enc_layers=2, enc_width=128, enc_heads=4,
              enc_ff=512, enc_batch=16, enc_seq=64, warmup=2, repeats=5)


@dataclass
class Row:
    name: str
    seconds: float  # median per call
    items: int  # tokens (training) or sequences (inference) per call
    losses: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.items / self.seconds


@dataclass
class Report:
    machine: str
    training: list[Row]
    encoder: list[Row]
    notes: list[str]


def machine_description() -> str:
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import transformers

    return (
        f"{model}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}"
    )


def round_robin(fns: dict[str, Callable[[int], object]], warmup: int, repeats: int) -> dict[str, tuple[float, list]]:
    """Call every ``fn(i)`` for i in 0..warmup+repeats-1, interleaved; median seconds and the results
    (float results only: losses; tensors are dropped)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, list] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn(i)
            if isinstance(result, float):
                results[name].append(result)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {k: (statistics.median(times[k]), results[k]) for k in fns}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _batches(s: Sizes, n: int) -> list[Tensor]:
    """Learnable token streams (arithmetic progressions with a random start and stride), so loss falls."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        start = torch.randint(0, s.vocab, (s.batch, 1), generator=g)
        stride = torch.randint(1, 6, (s.batch, 1), generator=g)
        out.append((start + stride * torch.arange(s.seq + 1)) % s.vocab)
    return out


def _train_step(model: nn.Module, logits_of: Callable[[Tensor], Tensor], batches: list[Tensor], bf16: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # ~7x faster than the for-loop on CPU
    model.train()
    device = batches[0].device

    def step(i: int) -> float:
        batch = batches[i]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = logits_of(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # waits for the device

    return step


def bench_training(s: Sizes, bf16: bool, device: torch.device = torch.device("cpu")) -> list[Row]:  # noqa: B008
    import copy

    import transformers

    from attnlab.weights.hf import load_hf_model

    config = transformers.GPT2Config(
        vocab_size=s.vocab, n_embd=s.width, n_layer=s.layers, n_head=s.heads, n_positions=s.seq,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config)
    ours = load_hf_model(hf).to(device)  # the same weights
    hf = hf.to(device)
    batches = [b.to(device) for b in _batches(s, s.warmup + s.repeats)]
    variants = {
        "HF GPT2LMHeadModel fp32": _train_step(hf, lambda x: hf(x, use_cache=False).logits, batches, False),
        "attnlab DecoderLM fp32": _train_step(ours, ours, batches, False),
    }
    if bf16:
        hf16, ours16 = copy.deepcopy(hf), copy.deepcopy(ours)
        variants["HF GPT2LMHeadModel bf16 autocast"] = _train_step(
            hf16, lambda x: hf16(x, use_cache=False).logits, batches, True
        )
        variants["attnlab DecoderLM bf16 autocast"] = _train_step(ours16, ours16, batches, True)
    measured = round_robin(variants, s.warmup, s.repeats)
    return [Row(name, sec, s.batch * s.seq, losses) for name, (sec, losses) in measured.items()]


def bench_encoder(s: Sizes, bf16: bool, device: torch.device = torch.device("cpu")) -> tuple[list[Row], float]:  # noqa: B008
    import transformers

    from attnlab.weights.hf import load_hf_model

    config = transformers.BertConfig(
        vocab_size=s.enc_vocab, hidden_size=s.enc_width, num_hidden_layers=s.enc_layers,
        num_attention_heads=s.enc_heads, intermediate_size=s.enc_ff, max_position_embeddings=512,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    hf = transformers.BertModel(config).eval()
    ours = load_hf_model(hf).eval().to(device)
    hf = hf.to(device)
    ids = torch.randint(1000, s.enc_vocab, (s.enc_batch, s.enc_seq), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)

    def hf_hidden(x: Tensor) -> Tensor:
        return hf(x).last_hidden_state

    def run(model: Callable[[Tensor], Tensor], bf16: bool) -> Callable[[int], Tensor]:
        def call(_: int) -> Tensor:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(ids)
            _sync(device)
            return out

        return call

    max_diff = float((run(ours, False)(0) - run(hf_hidden, False)(0)).abs().max())
    variants = {"HF BertModel fp32": run(hf_hidden, False), "attnlab EncoderModel fp32": run(ours, False)}
    if bf16:
        variants["HF BertModel bf16 autocast"] = run(hf_hidden, True)
        variants["attnlab EncoderModel bf16 autocast"] = run(ours, True)
    measured = round_robin(variants, s.warmup, s.repeats)
    return [Row(name, sec, s.enc_batch) for name, (sec, _) in measured.items()], max_diff


def run_bench(sizes: Sizes = FULL, *, bf16: str = "auto", threads: int = 0, device: str | torch.device = "cpu") -> Report:
    """Both benchmarks on ``device``; ``bf16`` is ``auto`` (bf16 rows only where
    ``attnlab.device.choose_precision("auto", device)`` picks bf16), ``on`` or ``off``. Raises
    ``DeviceError`` for a device this machine lacks."""
    where = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    notes = [f"device {where}" + (f" ({torch.cuda.get_device_name(where)})" if where.type == "cuda" else "")]
    chosen = choose_precision("auto", where)
    use_bf16 = bf16 == "on" or (bf16 == "auto" and chosen.name == "bf16")
    notes.append(f"precision auto would choose {chosen.name}: {chosen.reason}")
    if bf16 == "auto" and not use_bf16:
        notes.append("bf16 rows skipped (auto chose fp32 here); --bf16 on runs them anyway")
    # both seed their models (torch.manual_seed(0)): the caller's generators are left as they were
    with torch.random.fork_rng(devices=[where] if where.type == "cuda" else [], device_type=where.type):
        training = bench_training(sizes, use_bf16, where)
        encoder, max_diff = bench_encoder(sizes, use_bf16, where)
    by_name = {r.name: r for r in training}
    fp32 = by_name["attnlab DecoderLM fp32"].losses
    reference = by_name["HF GPT2LMHeadModel fp32"].losses
    notes.append(f"training losses, attnlab fp32 vs HF fp32: max |diff| {_max_diff(fp32, reference):.2e} "
                 f"over {len(fp32)} steps ({fp32[0]:.3f} -> {fp32[-1]:.3f})")
    if "attnlab DecoderLM bf16 autocast" in by_name:
        low = by_name["attnlab DecoderLM bf16 autocast"].losses
        rel = max(abs(a - b) / b for a, b in zip(low, fp32, strict=True))
        notes.append(f"bf16 loss trajectory vs fp32: max |diff| {_max_diff(low, fp32):.1e} "
                     f"({rel:.1%} relative) over {len(low)} steps: {'close' if rel < 0.02 else 'NOT close'}")
    notes.append(f"encoder outputs, attnlab vs HF (fp32): max |diff| {max_diff:.1e}")
    return Report(machine_description(), training, encoder, notes)


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def format_report(report: Report, sizes: Sizes = FULL) -> str:
    s = sizes
    lines = [f"machine: {report.machine}", ""]
    sections = [
        (f"training step: GPT-2 shape, {s.layers} layers, width {s.width}, {s.heads} heads, vocab {s.vocab}; "
         f"batch {s.batch} x {s.seq} tokens, AdamW, sdpa", report.training, "tokens/s"),
        (f"encoder inference: MiniLM shape, {s.enc_layers} layers, width {s.enc_width}, {s.enc_heads} heads, "
         f"d_ff {s.enc_ff}; {s.enc_batch} x {s.enc_seq} tokens, sdpa", report.encoder, "sequences/s"),
    ]
    for title, rows, unit in sections:
        base = rows[0].rate
        lines += [title, f"  {'variant':36s} {unit:>12s} {'ms/call':>9s} {'vs HF fp32':>10s}"]
        lines += [f"  {r.name:36s} {r.rate:12,.0f} {r.seconds * 1e3:9.0f} {r.rate / base:9.2f}x" for r in rows]
        lines.append("")
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"medians of {s.repeats} timed calls after {s.warmup} warm-up calls, variants interleaved")
    return "\n".join(lines)
