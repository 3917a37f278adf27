"""The optimizer choice (``attnlab.train.optim``): which parameters Muon trains, which AdamW, and the
pair of optimizers behaving as one (gradients of fused Q/K/V rows, state round trip, GradScaler)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attnlab.models import build_model, preset
from attnlab.train.config import TrainConfig
from attnlab.train.optim import Optimizers, make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = {
    "decoder (fused qkv, tied head)": preset("shakespeare-char", vocab_size=50),
    "decoder (llama: GQA, SwiGLU, untied head)": preset("llama-tiny", vocab_size=50).replace(
        d_model=32, n_heads=4, n_kv_heads=2, d_ff=48, n_layers=2),
    "decoder (fused qkv with GQA)": preset("llama-tiny", vocab_size=50).replace(
        d_model=32, n_heads=4, n_kv_heads=2, d_ff=48, n_layers=2, fused_qkv=True),
    "encoder (MLM head)": preset("bert-tiny", vocab_size=50),
    "encoder (classifier)": preset("bert-tiny", vocab_size=50).replace(n_classes=3),
    "encoder-decoder (cross-attention)": preset("transformer-small-2017", vocab_size=50).replace(
        d_model=32, n_heads=2, d_ff=64, n_layers=2),
}


def cfg(optimizer: str = "muon", **changes) -> TrainConfig:
    return TrainConfig(data="x", out="y", optimizer=optimizer, **changes)


def owners(model: nn.Module, tensors: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """The model parameter (by name) whose storage each optimizer tensor is or views."""
    by_storage = {p.untyped_storage().data_ptr(): name for name, p in model.named_parameters()}
    found: dict[str, list[torch.Tensor]] = {}
    for t in tensors:
        found.setdefault(by_storage[t.untyped_storage().data_ptr()], []).append(t)
    return found


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_is_in_exactly_one_optimizer_and_muon_gets_only_block_matrices(name) -> None:
    torch.manual_seed(0)
    model = build_model(MODELS[name])
    opt = make_optimizer(model, cfg())
    assert isinstance(opt, Optimizers)
    adamw, muon = opt.optimizers
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    adamw_params = [p for g in adamw.param_groups for p in g["params"]]
    muon_params = [p for g in muon.param_groups for p in g["params"]]
    in_adamw, in_muon = owners(model, adamw_params), owners(model, muon_params)
    assert all(len(v) == 1 for v in in_adamw.values())  # tied weights once
    params = dict(model.named_parameters())  # a tied weight under its first name
    assert set(in_adamw) | set(in_muon) == set(params) and not set(in_adamw) & set(in_muon)
    for param_name, parts in in_muon.items():
        weight = params[param_name]
        assert weight.dim() == 2 and ".blocks." in param_name, param_name
        assert all(p.dim() == 2 and p.is_leaf for p in parts)
        assert torch.equal(torch.cat(parts), weight)  # row blocks tile the weight exactly
        if param_name.endswith("qkv_proj.weight"):
            attn = model.get_submodule(param_name.removesuffix(".qkv_proj.weight"))
            kv = attn.n_kv_heads * attn.head_dim
            assert [p.shape[0] for p in parts] == [attn.n_heads * attn.head_dim, kv, kv]
        else:
            assert parts == [weight]
    block_matrices = {n for n, p in params.items() if ".blocks." in n and p.dim() == 2}
    assert set(in_muon) == block_matrices
    for param_name in in_adamw:
        assert param_name not in block_matrices
    assert any("embed" in n for n in in_adamw) and any("norm" in n for n in in_adamw)
    head = {"decoder": "lm_head", "encoder": "lm_head", "encoder-decoder": "lm_head"}[MODELS[name].family]
    assert any(head in n or "classifier" in n for n in in_adamw) or MODELS[name].tie_embeddings
    decay = {id(p) for p in adamw.param_groups[0]["params"]}
    assert adamw.param_groups[0]["weight_decay"] == 0.1 and adamw.param_groups[1]["weight_decay"] == 0.0
    assert all((p.dim() >= 2) == (id(p) in decay) for p in adamw_params)  # no decay on norms and biases


def test_adamw_alone_takes_every_parameter_once() -> None:
    model = build_model(MODELS["decoder (fused qkv, tied head)"])
    opt = make_optimizer(model, cfg("adamw"))
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted(id(p) for g in opt.param_groups for p in g["params"]) == sorted(id(p) for p in model.parameters())


def loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids)[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).mean().neg()


def step_once(model: nn.Module, opt, batches: list[torch.Tensor]) -> None:
    opt.zero_grad(set_to_none=True)
    for ids in batches:  # accumulation: several backward passes
        loss(model, ids).backward()
    opt.step()


def test_fused_qkv_steps_exactly_like_separate_q_k_v_weights() -> None:
    """Muon on a fused weight's row blocks = Muon on three separate projections with the same
    gradients (not one orthogonalization of the stack), through accumulated backward passes."""
    base = dict(d_model=32, n_heads=4, n_kv_heads=2, d_ff=48, n_layers=2, max_len=16)
    separate = build_model(preset("llama-tiny", vocab_size=50).replace(**base))
    fused = build_model(preset("llama-tiny", vocab_size=50).replace(**base, fused_qkv=True))
    rows = {"q": slice(0, 32), "k": slice(32, 48), "v": slice(48, 64)}

    def fused_name(name: str) -> tuple[str, slice]:
        module, kind = name.rsplit(".", 2)[0], name.split(".")[-2]
        if kind in ("q_proj", "k_proj", "v_proj"):
            return module + ".qkv_proj.weight", rows[kind[0]]
        return name, slice(None)

    with torch.no_grad():
        params = dict(fused.named_parameters())
        for name, p in separate.named_parameters():
            target, part = fused_name(name)
            params[target][part].copy_(p)
    ids = torch.randint(0, 50, (2, 3, 12), generator=torch.Generator().manual_seed(0))
    opt_s, opt_f = make_optimizer(separate, cfg()), make_optimizer(fused, cfg())
    for _ in range(3):
        opt_s.zero_grad(set_to_none=True)
        opt_f.zero_grad(set_to_none=True)
        for batch in ids:  # accumulation: the hook points the row blocks at the weight's gradient each time
            loss(fused, batch).backward()
        for name, p in separate.named_parameters():
            target, part = fused_name(name)
            p.grad = params[target].grad[part].clone()
        opt_s.step()
        opt_f.step()
    for name, p in separate.named_parameters():
        target, part = fused_name(name)
        assert torch.equal(params[target][part], p), name
    assert all(p.grad is not None for p in fused.parameters())
    opt_f.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in fused.parameters())  # the fused weights too (no optimizer holds them)


def test_state_dict_is_one_optimizer_layout_and_round_trips_and_refuses_adamw_state() -> None:
    torch.manual_seed(0)
    model = build_model(MODELS["decoder (fused qkv, tied head)"])
    opt = make_optimizer(model, cfg())
    ids = torch.randint(0, 50, (2, 2, 12), generator=torch.Generator().manual_seed(1))
    step_once(model, opt, list(ids))
    saved = copy.deepcopy(opt.state_dict())  # as a checkpoint gives it (live tensors would be shared)
    n = sum(len(g["params"]) for g in saved["param_groups"])
    assert sorted(i for g in saved["param_groups"] for i in g["params"]) == list(range(n))
    assert sorted(saved["state"]) == list(range(n))
    assert [("betas" in g, "momentum" in g) for g in saved["param_groups"]] == [(True, False)] * 2 + [(False, True)]
    torch.manual_seed(0)
    twin = build_model(MODELS["decoder (fused qkv, tied head)"])
    twin.load_state_dict(model.state_dict())
    other = make_optimizer(twin, cfg())
    other.load_state_dict(saved)
    for a, b in zip(saved["state"].values(), other.state_dict()["state"].values(), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = torch.randint(0, 50, (1, 2, 12), generator=torch.Generator().manual_seed(2))
    step_once(model, opt, list(batch))
    step_once(twin, other, list(batch))
    for (name, p), q in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    adamw_state = make_optimizer(twin, cfg("adamw")).state_dict()
    with pytest.raises(ValueError, match="another --optimizer"):
        other.load_state_dict(adamw_state)


def test_grad_scaler_unscales_fused_rows_and_steps_the_pair() -> None:
    """The loop's fp16 path (``scaler.unscale_`` / ``scaler.step``) takes the pair as one optimizer."""
    torch.manual_seed(0)
    model = build_model(MODELS["decoder (fused qkv, tied head)"])
    opt = make_optimizer(model, cfg())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))
    value = loss(model, ids)
    reference = torch.autograd.grad(value, [model.stack.blocks[0].attn.qkv_proj.weight], retain_graph=True)[0]
    scaler.scale(value).backward()
    scaler.unscale_(opt)
    torch.testing.assert_close(model.stack.blocks[0].attn.qkv_proj.weight.grad, reference)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scaler.step(opt)
    scaler.update()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())  # both optimizers stepped


def test_the_schedule_reaches_both_optimizers() -> None:
    opt = make_optimizer(build_model(MODELS["encoder (MLM head)"]), cfg())
    for group in opt.param_groups:
        group["lr"] = 0.123
    assert [g["lr"] for o in opt.optimizers for g in o.param_groups] == [0.123] * 3


def test_muon_with_fsdp_is_refused_when_configured() -> None:
    with pytest.raises(ValueError, match="optimizer muon does not run under strategy fsdp"):
        cfg(strategy="fsdp")
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; choose one of: adamw, muon"):
        cfg("sgd")
    assert cfg("adamw", strategy="fsdp").optimizer == "adamw"
