"""The checks and figures a CUDA GPU machine gives, in one short run (under 5 minutes on one H100/H200).

    PYTHONPATH=src python benchmarks/gpu_check.py [--quick] [--web-only]

1. parity: a GPT-2-small-shaped forward pass on the CPU and on the GPU in float32 (TF32 off) agree to 1e-4;
   web: the walkthrough app built with ``device="cuda"`` answers every model route (attention, generate, ...)
   for the demo models and the bundled ones as the CPU app does, every number to 1e-4 (relative above 1);
2. training: GPT-2 small (12 layers, width 768, 12 heads, block 1024, vocab 50304) in bf16 autocast with
   torch.compile and fused AdamW: tokens/s and MFU, the model FLOPs (6 N per token for the N weights
   outside the position table, plus 12 L d T per token of attention, nanoGPT's count) over (a) the
   device's peak dense bf16 FLOP/s from a table of known GPUs, and (b) a bf16 matmul peak measured here;
3. decoding: batch-1 tokens/s of the same model (``attnlab.generate.stream_ids``, eager and compiled);
4. the rnn-vs-transformer parallelism experiment, part (a) (step time against length), on the GPU;
5. ``pytest -m cuda tests/gpu`` (the CUDA-only tests, skipped elsewhere).

Each part is timed and reported on its own line; a part that fails is reported with its error and the
rest still run. The last line is one JSON object with every figure. Exit status: 0 when every check
passed (or when there is no GPU: one line says so), 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

# Peak dense (no sparsity) bf16 tensor-core FLOP/s from the vendors' data sheets; matched by substring
# of torch.cuda.get_device_name, longest name first ("A100" before "A10", "GH200" before "H200").
PEAK_BF16 = {
    "B200": 2250e12, "GH200": 989e12, "H200": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
    "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10G": 70e12,
    "A10": 125e12, "A6000": 155e12, "RTX 4090": 165e12, "RTX 3090": 71e12,
}


# Where the parts run and the model's shape: "cuda" and GPT-2 small. A smoke run of this script's code
# on a CPU (no figures) sets DEVICE = "cpu" and a small SHAPE, and calls the parts one by one.
DEVICE = "cuda"
SHAPE: dict[str, Any] = {}


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def table_peak(name: str) -> float | None:
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16[key]
    return None


def say(text: str) -> None:
    print(text, flush=True)


def timed(results: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one part; its figures (or its error) go to ``results[key]``."""
    start = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # one failing part must not hide the others
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    out["seconds"] = round(time.perf_counter() - start, 1)
    results[key] = out
    shown = {k: v for k, v in out.items() if k != "trace"}
    say(f"[{key}] {json.dumps(shown)}")


def gpt2_small(vocab: int = 50304):
    from attnlab.models import build_model, preset
    from attnlab.models.init import init_weights

    config = preset("gpt2-small").replace(vocab_size=vocab, dropout=0.0, **SHAPE)
    import torch

    torch.manual_seed(0)
    model = build_model(config)
    init_weights(model, config)
    return model


def parity() -> dict[str, Any]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = gpt2_small().eval()
    ids = torch.randint(0, 50304, (2, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = model(ids)
        gpu = model.to(DEVICE)(ids.to(DEVICE)).cpu()
    diff = float((gpu - cpu).abs().max())
    return {"ok": diff <= 1e-4, "max_abs_diff": diff, "tolerance": 1e-4, "shape": list(cpu.shape)}


LOCAL = "http://127.0.0.1"  # the app answers only to its own names (attnlab.web.guard)
# (path, body) of each model-running route: the demo models (all three families, the timeline, the Why
# view) and the bundled ones (shakespeare-char: attention and generation; translator: translation).
WEB_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    *[("/api/attention", {"model": m, "text": t}) for m, t in (
        ("demo-decoder", "the cat sat on the mat"), ("demo-encoder", "the cat sat on the mat"),
        ("demo-seq2seq", "the cat sat"), ("shakespeare-char", "ROMEO: But soft, what light"))],
    *[("/api/generate", {"model": m, "text": t, "max_new_tokens": 8, "temperature": 0.8, "seed": 3}) for m, t in (
        ("demo-decoder", "the cat"), ("shakespeare-char", "ROMEO:"))],
    ("/api/qkv", {"model": "demo-decoder", "text": "the cat sat", "layer": 1, "head": 2, "focus": 5}),
    ("/api/part", {"model": "demo-encoder", "text": "the cat sat", "part": "feed-forward", "layer": 1}),
    ("/api/positions", {"model": "demo-encoder", "first": "ab cd", "second": "cd ab"}),
    ("/api/next-token", {"model": "shakespeare-char", "text": "ROMEO:"}),
    ("/api/heads/rank", {"model": "demo-encoder", "text": "the cat sat on the mat", "query": 7, "key": 2}),
    ("/api/why", {"model": "demo-decoder", "text": "hello there", "layer": 1, "head": 1}),
    ("/api/why", {"model": "demo-encoder", "text": "hello there", "layer": 1, "head": 1}),
    ("/api/timeline/attention", {"model": "demo-decoder", "step": 30, "layer": 1, "head": 0}),
    ("/api/translate", {"model": "demo-translator", "text": "In the beginning", "max_new_tokens": 8}),
    ("/api/translate", {"model": "translator", "text": "In the beginning God created the heaven.", "beam_size": 2,
                        "max_new_tokens": 16}),
]


def json_gap(a: Any, b: Any, where: str = "") -> tuple[float, list[str]]:
    """How far two JSON answers are apart: the largest ``|a - b| / max(1, |b|)`` over their floats, and
    where anything else differs (keys, lengths, integers, strings: those must be equal)."""
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return 0.0, [f"{where}: {a!r} vs {b!r}"]
        return abs(a - b) / max(1.0, abs(b)), []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return 0.0, [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        parts = [json_gap(a[k], b[k], f"{where}.{k}") for k in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return 0.0, [f"{where}: {len(a)} items vs {len(b)}"]
        parts = [json_gap(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))]
    else:
        return 0.0, ([] if a == b else [f"{where}: {str(a)[:40]!r} vs {str(b)[:40]!r}"])
    return max((g for g, _ in parts), default=0.0), [d for _, ds in parts for d in ds]


def web_app(tolerance: float = 1e-4) -> dict[str, Any]:
    """The walkthrough on ``DEVICE``: ``WEB_REQUESTS`` answered by ``create_app(device="cpu")`` and by
    ``create_app(device=DEVICE)`` (one device per process: the apps run one after the other) agree."""
    import torch
    from fastapi.testclient import TestClient

    from attnlab.generate import model_device
    from attnlab.web import models as web_models
    from attnlab.web.app import create_app
    from attnlab.web.demo import register_demo_models

    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # the app's float32
    try:
        register_demo_models(Path(tempfile.mkdtemp(prefix="gpu-check-demo-")))
        answers: dict[str, list[Any]] = {}
        reported: dict[str, str] = {}  # what /api/models says the app runs on
        for device in ("cpu", DEVICE):
            client = TestClient(create_app(device=device), base_url=LOCAL)
            reported[device] = client.get("/api/models").json()["device"]
            answers[device] = []
            for path, body in WEB_REQUESTS:
                r = client.post(path, json=body)
                answers[device].append(r.json() if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}")
        placed = {name: str(model_device(web_models.get_model(name).model))
                  for name in sorted({body["model"] for _, body in WEB_REQUESTS})}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
        web_models.set_device("cpu")
    routes: dict[str, Any] = {}
    for (path, body), cpu, there in zip(WEB_REQUESTS, answers["cpu"], answers[DEVICE], strict=True):
        key = f"{path} {body['model']}"
        if isinstance(cpu, str) or isinstance(there, str):
            routes[key] = {"ok": False, "cpu": cpu if isinstance(cpu, str) else "200", DEVICE: there
                           if isinstance(there, str) else "200"}
            continue
        gap, other = json_gap(there, cpu)
        routes[key] = {"ok": gap <= tolerance and not other, "max_gap": gap, **({"differs": other[:5]} if other else {})}
    on_device = all(where.split(":")[0] == DEVICE for where in placed.values())
    says = reported["cpu"] == "cpu" and reported[DEVICE].split(":")[0] == DEVICE
    return {"ok": on_device and says and all(r["ok"] for r in routes.values()), "tolerance": tolerance,
            "models_on": placed, "api_models_device": reported, "routes": routes}


def matmul_peak(n: int = 8192, repeats: int = 20) -> float:
    """Measured bf16 FLOP/s of an n x n x n matmul (the best of ``repeats`` timed with CUDA events)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * n**3 / best


def training(quick: bool) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    batch, block, steps, warmup = (4, 1024, 5, 2) if quick else (16, 1024, 15, 3)
    model = gpt2_small().to(DEVICE).train()
    config = model.config
    block = min(block, config.max_len)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights once
    position = sum(m.weight.numel() for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Embedding) and "pos" in name)
    n = n_params - position
    flops_per_token = 6 * n + 12 * config.n_layers * config.d_model * block
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    positions = torch.arange(block, device=DEVICE)
    # logits_at is forward without its input checks, whose reads of ids.min()/max() would stop the
    # compiled graph and wait for the GPU every step; the arithmetic is the same.
    runner = torch.compile(lambda ids: model.logits_at(ids, positions))
    g = torch.Generator(device=DEVICE).manual_seed(0)
    data = torch.randint(0, config.vocab_size, (warmup + steps, batch, block + 1), device=DEVICE, generator=g)

    def step(i: int) -> torch.Tensor:
        x, y = data[i, :, :-1], data[i, :, 1:]
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            logits = runner(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    compile_start = time.perf_counter()
    for i in range(warmup):
        step(i)
    _sync()
    compile_s = time.perf_counter() - compile_start
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        loss = step(i)
    final = float(loss)  # waits for the last step
    seconds = time.perf_counter() - start
    tokens_per_s = batch * block * steps / seconds
    achieved = flops_per_token * tokens_per_s
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    peak = table_peak(name)
    measured = matmul_peak() if DEVICE == "cuda" else float("nan")
    return {
        "ok": final == final, "model": "gpt2-small shape (12 layers, width 768, 12 heads, block 1024, vocab 50304)",
        "batch": batch, "block": block, "steps_timed": steps, "precision": "bf16 autocast + torch.compile",
        "n_params": n_params, "flops_per_token": flops_per_token, "tokens_per_s": round(tokens_per_s),
        "model_tflops": round(achieved / 1e12, 1), "compile_and_warmup_s": round(compile_s, 1),
        "peak_bf16_table_tflops": peak and round(peak / 1e12), "mfu_vs_table": peak and round(achieved / peak, 3),
        "matmul_peak_measured_tflops": round(measured / 1e12, 1), "mfu_vs_measured": round(achieved / measured, 3),
        "final_loss": final,
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if DEVICE == "cuda" else None,
    }


def decoding(quick: bool) -> dict[str, Any]:
    from attnlab.generate import Sampling, stream_ids

    model = gpt2_small().to(DEVICE).eval()
    prompt = list(range(100, 116))
    new = 64 if quick else 256
    greedy = Sampling(temperature=0)
    out: dict[str, Any] = {"ok": True, "prompt_tokens": len(prompt), "new_tokens": new, "precision": "fp32"}
    for label, compile in (("eager", False), ("compiled", True)):
        try:
            list(stream_ids(model, prompt, max_new_tokens=4, sampling=greedy, compile=compile))  # warm-up / compile
            _sync()
            start = time.perf_counter()
            tokens = [t for t, _ in stream_ids(model, prompt, max_new_tokens=new, sampling=greedy, compile=compile)]
            seconds = time.perf_counter() - start  # each token is copied to the CPU: the loop waits for it
        except Exception as exc:  # the eager figure still counts when compiling fails
            out[f"{label}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            out["ok"] = False
            continue
        out[f"{label}_tokens_per_s"] = round(len(tokens) / seconds, 1)
        out[f"{label}_first_tokens"] = tokens[:8]
    if "eager_first_tokens" in out and "compiled_first_tokens" in out:
        out["compiled_matches_eager"] = out["eager_first_tokens"] == out["compiled_first_tokens"]
    return out


def parallelism(quick: bool) -> dict[str, Any]:
    import torch

    from attnlab.experiments.rnn_vs_transformer import throughput

    result = throughput("tiny" if quick else "quick", 0, False, torch.device(DEVICE))
    longest = max(result["lengths"])
    return {
        "ok": True, "experiment": "rnn-vs-transformer (a): training-step time against sequence length, on the GPU",
        "lengths": result["lengths"], "batch": result["batch"],
        "step_time_exponent": {k: round(v, 2) for k, v in result["step_time_exponent"].items()},
        f"tokens_per_s_at_{longest}": {r["model"]: round(r["tokens_per_s"]) for r in result["rows"]
                                       if r["seq_len"] == longest},
    }


def cuda_tests() -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/gpu", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                           "--no-header", "-rfEs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return {"ok": proc.returncode == 0, "exit_status": proc.returncode, "summary": tail[-1] if tail else "",
            "failures": [line for line in tail if line.startswith(("FAILED", "ERROR"))][:10]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller shapes (a smoke run, not the figures to quote)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    ap.add_argument("--web-only", action="store_true", help="run only the web part (attnlab serve --device cuda)")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        say("gpu_check: no GPU found (torch is not installed); nothing to check")
        return 0
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
        say(f"gpu_check: no GPU found (torch {torch.__version__}, {build}); nothing to check")
        return 0
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "bf16": torch.cuda.is_bf16_supported(), "gpus": torch.cuda.device_count(),
    }
    say(f"gpu_check: {results['device']} x {results['gpus']}, torch {results['torch']}, CUDA {results['cuda']}")
    started = time.perf_counter()
    if not args.web_only:
        timed(results, "parity", parity)
    timed(results, "web", web_app)
    if not args.web_only:
        timed(results, "training", lambda: training(args.quick))
        torch.cuda.empty_cache()
        timed(results, "decoding", lambda: decoding(args.quick))
        timed(results, "parallelism", lambda: parallelism(args.quick))
    if not (args.skip_tests or args.web_only):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ.setdefault("XDG_CACHE_HOME", tmp)
            timed(results, "cuda_tests", cuda_tests)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    parts = [k for k, v in results.items() if isinstance(v, dict)]
    results["ok"] = all(results[k].get("ok") for k in parts)
    for k in parts:
        results[k].pop("trace", None)
    print(json.dumps(results), flush=True)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
