"""Issue 16 on a CPU-only machine: every entry point takes a device, checkpoints hold none, a device
this machine lacks is one clear error, threads are chosen for a busy machine (CUDA itself: tests/gpu/)."""

from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab import catalog, device
from attnlab.cli import main
from attnlab.generate import Sampling, generate, model_device
from attnlab.models import DecoderLM, TransformerConfig
from attnlab.tokenizers import CharTokenizer
from attnlab.train import config as train_config
from attnlab.train.config import TrainConfig
from attnlab.train.distributed import rank_device
from attnlab.weights.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TOK = CharTokenizer("abcdefgh ")
NO_CUDA = not torch.cuda.is_available()


def tiny() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(TransformerConfig(family="decoder", vocab_size=9, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                                       max_len=16)).eval()


def test_train_config_restates_the_device_module_exactly() -> None:
    assert train_config.DEVICE_HELP == device.DEVICE_HELP and train_config.PRECISIONS == device.PRECISIONS
    assert "device" in train_config.RESUME_MAY_CHANGE and "precision" not in train_config.RESUME_MAY_CHANGE
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        TrainConfig(data="x", out="y", device="gpu")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        TrainConfig(data="x", out="y", precision="fp8")
    assert TrainConfig(data="x", out="y", device="cuda:1").device == "cuda:1"  # availability: checked at run time


def test_checkpoints_load_onto_the_device_asked_for(tmp_path) -> None:
    """Weights are read onto the CPU and the model then moved (the meta device stands in for a GPU)."""
    save_checkpoint(tmp_path / "ckpt", tiny(), TOK)
    on_cpu = load_checkpoint(tmp_path / "ckpt", device="cpu").model
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"}
    elsewhere = load_checkpoint(tmp_path / "ckpt", device=torch.device("meta")).model
    assert {t.device.type for t in (*elsewhere.parameters(), *elsewhere.buffers())} == {"meta"}
    assert model_device(elsewhere) == torch.device("meta")
    auto = load_checkpoint(tmp_path / "ckpt", device="auto").model
    assert model_device(auto) == device.resolve_device("auto")
    for a, b in zip(on_cpu.parameters(), tiny().parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_checkpoint_written_from_another_device_loads_here(tmp_path, monkeypatch) -> None:
    """What a GPU run writes: every tensor is copied to the CPU first (``Tensor.cpu``), so the file
    names no device. Simulated: the state dict's tensors report a device the loader never sees."""
    model = tiny()
    seen = []
    real_cpu = torch.Tensor.cpu

    def cpu(self, *args, **kwargs):
        seen.append(self.device.type)
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    save_checkpoint(tmp_path / "ckpt", model, TOK)
    monkeypatch.undo()
    assert len(seen) >= len(list(model.parameters())) - 1  # tied weights are stored once
    loaded = load_checkpoint(tmp_path / "ckpt").model
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
def test_an_unavailable_device_is_refused_before_anything_is_read(tmp_path) -> None:
    with pytest.raises(device.DeviceError, match="--device cuda: "):
        load_checkpoint(tmp_path / "missing", device="cuda")  # the device error, not "no checkpoint"
    with pytest.raises(device.DeviceError, match="--device cuda:0"):
        attnlab.load("shakespeare-char", device="cuda:0")
    with pytest.raises(device.DeviceError, match="cuda"):
        rank_device("cuda", 0, 2)


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("command", [["generate", "ab"], ["translate", "hi"], ["bleu", "--data", "x.tsv"],
                                     ["bench", "--quick"], ["experiment", "rnn-vs-transformer"],
                                     ["train", "--data", "x.txt", "--out", "run"]])
def test_commands_refuse_cuda_here_in_one_line(capsys, command) -> None:
    code = main([*command, "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "cuda" in err[0] and ("no CUDA" in err[0] or "CUDA support" in err[0]), err


def test_train_refuses_fp16_off_cuda_before_any_work(tmp_path, capsys) -> None:
    code = main(["train", "--data", str(tmp_path / "x.txt"), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--precision fp16 needs a CUDA GPU" in err[0], err
    assert not (tmp_path / "run").exists()


def test_generate_on_cpu_and_auto_gives_the_same_text(tmp_path, capsys) -> None:
    save_checkpoint(tmp_path / "ckpt", tiny(), TOK)
    outs = []
    for spec in ("cpu", "auto"):
        assert main(["generate", "ab", "--checkpoint", str(tmp_path / "ckpt"), "-n", "8", "--seed", "3",
                     "--device", spec, "--threads", "1"]) == 0
        captured = capsys.readouterr()
        outs.append(captured.out)
        assert captured.err.startswith(f"attnlab: device {device.resolve_device(spec)}; threads 1 (asked for")
    assert outs[0] == outs[1] and len(outs[0]) > 2
    assert outs[0].rstrip("\n") == "ab" + generate(tiny(), TOK, "ab", max_new_tokens=8, seed=3,
                                                   sampling=Sampling(temperature=0.8))


def test_catalogue_copies_a_model_per_device_and_keeps_the_cpu_one(monkeypatch) -> None:
    """``load(name, device=...)`` leaves the shared CPU model alone and caches one copy per device
    (the meta device stands in for a GPU); unloading drops the copies too."""
    model = tiny()
    info = catalog._entry("tiny-hw", "decoder", "test", "0", "test", "MIT", "-", lambda: True, lambda: (model, TOK))
    catalog.register(info)
    monkeypatch.setattr(catalog, "resolve_device", lambda spec: torch.device(str(spec)))
    cpu = attnlab.load("tiny-hw")
    assert cpu.model is model and catalog.load("tiny-hw", device="cpu") is cpu
    meta = attnlab.load("tiny-hw", device="meta")
    assert model_device(meta.model) == torch.device("meta") and model_device(model) == torch.device("cpu")
    assert catalog.load("tiny-hw", device="meta") is meta and meta.tokenizer is TOK
    assert catalog.unload("tiny-hw") and not catalog._ON_DEVICE


@pytest.mark.parametrize(("kwargs", "threads"), [
    ({"cores": 2, "load": 0.0}, 1),  # the 2-core machine: one thread whatever the load
    ({"cores": 2, "load": 3.0}, 1),
    ({"cores": 16, "load": 0.2}, 15),  # one core left free
    ({"cores": 16, "load": 6.0}, 10),  # others are busy: their cores are left to them
    ({"cores": 16, "load": 0.0, "processes": 4}, 3),  # torchrun: the cores are shared
])
def test_automatic_threads_leave_busy_cores_alone(monkeypatch, kwargs, threads) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    chosen, why = device.choose_threads(0, **kwargs)
    assert chosen == threads and why.startswith("auto: ")
    assert device.choose_threads(3, **kwargs) == (3, "asked for (--threads)")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert device.choose_threads(0, **kwargs) == (5, "OMP_NUM_THREADS")


def test_set_threads_applies_and_says_what_it_chose() -> None:
    assert device.set_threads(1) == "threads 1 (asked for (--threads))" and torch.get_num_threads() == 1


def test_the_cuda_skip_is_not_taken_for_a_missing_dependency_in_ci() -> None:
    """tests/ci_skips.py fails CI skips that name a missing package; "needs a CUDA GPU" must not look like one."""
    from ci_skips import MISSING_DEPENDENCY, NEEDS_CUDA

    assert NEEDS_CUDA == "needs a CUDA GPU" and not MISSING_DEPENDENCY.search(NEEDS_CUDA)


@pytest.mark.skipif(not NO_CUDA, reason="checks the answer on a machine without CUDA")
def test_gpu_check_says_no_gpu_in_one_line_and_exits_0() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()] and "no GPU found" in proc.stdout
