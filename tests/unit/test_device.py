"""Device and precision choice: auto paths, clear refusals, the bf16 probe and its cache."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.device import DeviceError, choose_precision, cpu_bf16_speedup, resolve_device


def test_cpu_and_auto_resolve_to_an_available_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    else:
        assert auto.type in ("mps", "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_names_what_is_missing(spec: str) -> None:
    with pytest.raises(DeviceError, match="CUDA") as err:
        resolve_device(spec)
    assert "--device cpu" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu"])
def test_unknown_device_spellings_are_refused(spec: str) -> None:
    with pytest.raises(DeviceError):
        resolve_device(spec)


@pytest.mark.skipif(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
                    reason="checks the refusal on a machine without MPS")
def test_mps_without_mps_is_refused() -> None:
    with pytest.raises(DeviceError, match=r"MPS|Apple"):
        resolve_device("mps")


def test_auto_precision_follows_the_probe(tmp_path) -> None:
    cpu = torch.device("cpu")
    slow = choose_precision("auto", cpu, probe=lambda: 0.1, cache=tmp_path / "slow.json")
    assert slow.name == "fp32" and slow.dtype is None and "0.10x" in slow.reason
    fast = choose_precision("auto", cpu, probe=lambda: 4.2, cache=tmp_path / "fast.json")
    assert fast.name == "bf16" and fast.dtype == torch.bfloat16 and "4.2x" in fast.reason


def test_probe_runs_once_per_machine(tmp_path) -> None:
    calls = []

    def probe() -> float:
        calls.append(1)
        return 3.0

    cache = tmp_path / "precision.json"
    assert cpu_bf16_speedup(probe=probe, cache=cache) == (3.0, False)
    assert cpu_bf16_speedup(probe=probe, cache=cache) == (3.0, True)
    assert len(calls) == 1
    assert list(json.loads(cache.read_text()).values()) == [3.0]
    cache.write_text("not json")  # a broken cache is ignored and rewritten
    assert cpu_bf16_speedup(probe=probe, cache=cache) == (3.0, False)


def test_explicit_precisions(tmp_path) -> None:
    cpu = torch.device("cpu")
    assert choose_precision("fp32", cpu).dtype is None
    assert choose_precision("bf16", cpu).dtype == torch.bfloat16
    with pytest.raises(DeviceError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", cpu)
    with pytest.raises(DeviceError, match="unknown precision"):
        choose_precision("int8", cpu)
    assert not choose_precision("bf16", cpu).needs_grad_scaler


def test_bf16_autocast_loss_stays_within_one_percent_of_fp32() -> None:
    """20 training steps of a tiny decoder: the bf16-autocast loss trajectory tracks fp32's within 1%."""
    from attnlab.models import TransformerConfig, build_model

    torch.set_num_threads(1)
    config = TransformerConfig(family="decoder", vocab_size=50, d_model=64, n_heads=4, n_layers=2, d_ff=128, max_len=32)
    data = torch.randint(0, 50, (20, 8, 33), generator=torch.Generator().manual_seed(0))
    trajectories = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(config)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        precision = choose_precision(name, torch.device("cpu"))
        losses = []
        for batch in data:
            with precision.autocast(torch.device("cpu")):
                logits = model(batch[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, 50), batch[:, 1:].reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        trajectories[name] = losses
    for a, b in zip(trajectories["fp32"], trajectories["bf16"], strict=True):
        assert abs(a - b) / a < 0.01
