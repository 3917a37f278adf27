"""Issue 16 on a CUDA GPU: the same numbers as the CPU (fp32), checkpoints that cross devices, the training
loop in each precision. Marked ``cuda``: skipped ("needs a CUDA GPU") elsewhere; ``benchmarks/gpu_check.py``
runs them with ``pytest -m cuda``."""

from __future__ import annotations

import json
import random

import pytest
import torch

from attnlab.device import choose_precision, resolve_device
from attnlab.generate import Sampling, generate_batch_ids, model_device, stream_ids, translate_ids
from attnlab.models import DecoderLM, TransformerConfig, build_model, preset
from attnlab.models.init import init_weights
from attnlab.tokenizers import CharTokenizer
from attnlab.train.config import TrainConfig
from attnlab.train.loop import train
from attnlab.weights.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda", 0)


@pytest.fixture(autouse=True)
def _exact_fp32():
    """TF32 matmuls round to 10 mantissa bits; parity at 1e-4 needs true float32."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def built(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    config = preset(name).replace(dropout=0.0, **overrides)
    model = build_model(config)
    init_weights(model, config)
    return model.eval()


@pytest.mark.parametrize("name", ["shakespeare-char", "bert-tiny", "transformer-small-2017", "llama-tiny"])
def test_forward_on_cuda_matches_the_cpu_in_fp32(name) -> None:
    model = built(name)
    config = model.config
    ids = torch.randint(0, config.vocab_size, (2, min(32, config.max_len)), generator=torch.Generator().manual_seed(0))
    inputs = (ids, ids[:, :-1]) if config.family == "encoder-decoder" else (ids,)
    with torch.no_grad():
        cpu = model(*inputs)
        gpu = model.to(CUDA)(*(x.to(CUDA) for x in inputs))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)


def test_resolve_device_and_auto_precision_on_cuda() -> None:
    assert resolve_device("auto").type == "cuda" and resolve_device("cuda:0") == CUDA
    chosen = choose_precision("auto", CUDA)
    assert chosen.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


def test_generation_on_cuda_chooses_the_cpu_tokens() -> None:
    model = built("shakespeare-char")
    prompt = [5, 9, 12, 3]
    greedy = Sampling(temperature=0)
    cpu = [t for t, _ in stream_ids(model, prompt, max_new_tokens=40, sampling=greedy)]
    batch_cpu = generate_batch_ids(model, [prompt, prompt[:2]], max_new_tokens=8, sampling=greedy)
    model.to(CUDA)
    assert model_device(model) == CUDA
    assert [t for t, _ in stream_ids(model, prompt, max_new_tokens=40, sampling=greedy)] == cpu
    assert generate_batch_ids(model, [prompt, prompt[:2]], max_new_tokens=8, sampling=greedy) == batch_cpu
    compiled = [t for t, _ in stream_ids(model, prompt, max_new_tokens=40, sampling=greedy, compile=True)]
    assert compiled == cpu  # a near-tie could differ in the last bits; with random weights there is none here


def test_beam_search_on_cuda_matches_the_cpu() -> None:
    model = built("transformer-small-2017", vocab_size=300)
    src = list(range(10, 30))
    cpu = translate_ids(model, src, bos_id=1, eos_id=2, max_new_tokens=12, beam_size=4)
    gpu = translate_ids(model.to(CUDA), src, bos_id=1, eos_id=2, max_new_tokens=12, beam_size=4)
    assert gpu[0] == cpu[0] and gpu[1] == pytest.approx(cpu[1], abs=1e-3)


def test_a_checkpoint_saved_on_cuda_loads_on_the_cpu_and_back(tmp_path) -> None:
    tok = CharTokenizer("abcdefgh")
    model = DecoderLM(TransformerConfig(family="decoder", vocab_size=8, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                                        max_len=16)).to(CUDA)
    save_checkpoint(tmp_path / "ckpt", model, tok)
    on_cpu = load_checkpoint(tmp_path / "ckpt").model
    on_gpu = load_checkpoint(tmp_path / "ckpt", device="cuda").model
    assert model_device(on_cpu).type == "cpu" and model_device(on_gpu) == CUDA
    for a, b, c in zip(model.state_dict().values(), on_cpu.state_dict().values(), on_gpu.state_dict().values(),
                       strict=True):
        torch.testing.assert_close(b, a.cpu(), rtol=0, atol=0)
        torch.testing.assert_close(c, a, rtol=0, atol=0)


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question"]
    (tmp_path / "corpus.txt").write_text("".join(" ".join(rng.choice(words) for _ in range(9)) + "\n"
                                                 for _ in range(300)))
    return tmp_path


def config(tmp_path, out: str, **changes) -> TrainConfig:
    base = dict(data=str(tmp_path / "corpus.txt"), out=str(tmp_path / out), iters=6, batch_size=4, warmup=2,
                eval_interval=3, eval_iters=2, progress=False, lr=3e-3, decay_iters=8,
                model_overrides={"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 32})
    return TrainConfig(**{**base, **changes})


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])  # muon: the fp16 GradScaler steps AdamW and Muon as one
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_in_each_precision(corpus, precision, optimizer) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = train(config(corpus, precision, device="cuda", precision=precision, optimizer=optimizer))
    assert result.step == 6 and all(v == v and v < 10 for v in result.losses)
    info = json.loads((corpus / precision / "last" / "training" / "state.json").read_text())["info"]
    assert info["device"] == "cuda:0" and info["precision"]["name"] == precision
    assert ("grad_scaler" in info) == (precision == "fp16")


def test_cuda_fp32_training_matches_the_cpu_and_resumes_on_the_cpu(corpus) -> None:
    gpu = train(config(corpus, "gpu", device="cuda", precision="fp32", iters=6))
    cpu = train(config(corpus, "cpu", device="cpu", precision="fp32", iters=6))
    assert gpu.losses == pytest.approx(cpu.losses, abs=1e-4)
    train(config(corpus, "moved", device="cuda", precision="fp32", iters=3))
    moved = train(config(corpus, "moved", device="cpu", precision="fp32", iters=6, resume=True))
    assert moved.losses == pytest.approx(cpu.losses[3:], abs=1e-4)
