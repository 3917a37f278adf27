"""Device and precision choice: auto paths, clear refusals, the bf16 probe and its cache."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.device import (
    PROBE_ENV,
    DeviceError,
    Precision,
    Workload,
    bf16_matmul_speedup,
    choose_precision,
    cpu_bf16_speedup,
    resolve_device,
    time_workload,
)


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


@pytest.fixture
def unforced(monkeypatch):
    """The probe's outcome as measured (tests/conftest.py forces it for the rest of the suite)."""
    monkeypatch.delenv(PROBE_ENV, raising=False)


def test_auto_precision_follows_the_probe(tmp_path, unforced) -> None:
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


class FakeClock:
    """Time that passes only when a fake step says so: fp32 and bf16 steps cost what the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_workload(clock: FakeClock, fp32_s: float, bf16_s: float, calls: list[str]) -> Workload:
    def step(autocast) -> None:
        with autocast:
            bf16 = torch.is_autocast_enabled("cpu")
            torch.rand(3)  # like dropout: draws from the global generator
        calls.append("bf16" if bf16 else "fp32")
        clock.now += bf16_s if bf16 else fp32_s

    return Workload(key=f"fake {fp32_s} {bf16_s}", step=step, what="training step")


@pytest.mark.parametrize(("fp32_s", "bf16_s", "chosen", "said"), [
    (0.30, 0.20, "bf16", "bf16: 1.50x faster than fp32 on this model's training step (measured"),
    (0.20, 0.25, "fp32", "bf16 autocast ran this model's training step at 0.80x the fp32 speed (measured"),
    (0.21, 0.20, "fp32", "at 1.05x the fp32 speed"),  # within the noise margin: not measurably faster
])
def test_auto_decides_by_the_measured_cost_of_the_models_own_step(tmp_path, unforced, fp32_s, bf16_s, chosen, said) -> None:
    """A 512x512 bf16 matmul 5.6x faster said nothing about a small model's training step, which was
    slower in bf16 autocast: auto times the step itself (injected times here) in both precisions."""
    cpu, clock, calls = torch.device("cpu"), FakeClock(), []
    work = fake_workload(clock, fp32_s, bf16_s, calls)
    assert time_workload(work, cpu, repeats=3, clock=clock) == pytest.approx(fp32_s / bf16_s)
    assert calls == ["fp32", "bf16"] * 4  # a warm-up each, then alternating rounds
    probe = lambda: time_workload(work, cpu, clock=clock)  # noqa: E731
    first = choose_precision("auto", cpu, workload=work, probe=probe, cache=tmp_path / "p.json")
    assert first.name == chosen and said in first.reason and "(measured)" in first.reason
    calls.clear()
    again = choose_precision("auto", cpu, workload=work, probe=probe, cache=tmp_path / "p.json")
    assert again == Precision(chosen, first.dtype, first.reason.replace("(measured)", "(measured, cached)"))
    assert calls == []  # cached per workload shape and machine
    other = fake_workload(clock, bf16_s, fp32_s, calls)  # another shape (key) is measured again
    choose_precision("auto", cpu, workload=other, cache=tmp_path / "p.json", probe=lambda: time_workload(other, cpu, clock=clock))
    assert calls


def test_the_probe_leaves_the_global_random_state_alone(tmp_path, unforced) -> None:
    """The probe drew from torch's global generator only when its cache was empty, so one --seed
    trained differently on a machine's first run."""
    before = torch.get_rng_state()
    bf16_matmul_speedup(size=64, repeats=1)
    calls: list[str] = []
    choose_precision("auto", torch.device("cpu"), workload=fake_workload(FakeClock(), 0.2, 0.1, calls),
                     cache=tmp_path / "p.json")
    assert calls and torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(("forced", "chosen"), [("fast", "bf16"), ("slow", "fp32")])
def test_an_environment_variable_forces_the_probes_outcome(tmp_path, monkeypatch, forced, chosen) -> None:
    monkeypatch.setenv(PROBE_ENV, forced)
    calls: list[str] = []
    got = choose_precision("auto", torch.device("cpu"), workload=fake_workload(FakeClock(), 0.2, 0.1, calls),
                           cache=tmp_path / "p.json")
    assert got.name == chosen and f"{PROBE_ENV}={forced}" in got.reason and calls == []
    assert choose_precision("fp32", torch.device("cpu")).name == "fp32"  # an explicit choice is not forced
    monkeypatch.setenv(PROBE_ENV, "maybe")
    with pytest.raises(DeviceError, match=f"{PROBE_ENV}='maybe'"):
        choose_precision("auto", torch.device("cpu"))
