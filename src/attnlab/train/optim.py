"""The optimizer of a training run (``--optimizer``): AdamW alone, or Muon with AdamW.

``adamw``: AdamW (Loshchilov & Hutter 2019) for every parameter, with weight decay on matrices only
(decaying norms' gains and biases only hurts).

``muon``: Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks",
https://kellerjordan.github.io/posts/muon/) for the weight matrices of the Transformer blocks --
attention Q, K, V and output projections (self- and cross-attention), feed-forward up, gate and
down -- and the AdamW above for every other parameter: token, position and segment embeddings, the
output head (tied to the embedding or not), the MLM transform, pooler and classifier, norms and
biases. Muon keeps SGD momentum (0.95, Nesterov) and replaces each update by the nearest
semi-orthogonal matrix (five Newton-Schulz iterations, ``torch.optim.Muon``), so that no direction
of a matrix's update dominates. It is meant for hidden matrices only; embeddings and output layers
stay with AdamW as in Keller Jordan's recipe (modded-nanoGPT).

One learning rate: Muon's raw update has unit spectral norm, so its per-element size is not
AdamW's; ``adjust_lr_fn="match_rms_adamw"`` scales it by ``0.2 * sqrt(max(rows, cols))`` (Liu et al.
2025, "Muon is Scalable for LLM Training", arXiv:2502.16982), which gives it AdamW's update RMS, so
``--lr``, its warmup and cosine schedule, and ``--weight-decay`` (decoupled, ``lr * wd``) serve both.

Fused Q/K/V (``fused_qkv=True``: one ``(q_dim + 2 * kv_dim, d_model)`` weight): Muon orthogonalizes
Q, K and V as three matrices. Orthogonalizing the stack would couple three unrelated projections and
size the step by the stack's shape; keeping them apart trained better for Keller Jordan and for the
Moonlight authors (NVIDIA/Megatron-LM#1428), and is why nanochat keeps its projections unfused
(karpathy/nanochat#27). Each block is a leaf view of the
weight's rows (Muon's in-place update lands in the weight itself), and a hook on the weight points each
block's gradient at the matching rows of the weight's gradient after every backward pass, so gradient
scaling, clipping and unscaling of the weight reach Muon unchanged. The hook stays on the model.

``--strategy fsdp`` is refused with Muon (``TrainConfig``): ``torch.optim.Muon`` orthogonalizes whole
local matrices and knows nothing of FSDP's sharded ``DTensor`` parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.nn.attention import MultiHeadAttention
from attnlab.nn.layers import Block
from attnlab.train.config import TrainConfig


class Optimizers:
    """Optimizers over disjoint parameters, used as one by the loop and ``torch.amp.GradScaler``.

    ``param_groups`` lists every optimizer's groups (the schedule sets each group's ``"lr"``);
    ``state_dict`` has the layout of one ``torch.optim`` optimizer holding all those groups in order
    (parameters numbered on across optimizers), so checkpoints store it unchanged, and
    ``load_state_dict`` splits it back. ``fused`` are weights split into row blocks for an optimizer
    (see the module docstring): ``zero_grad`` clears their gradients too.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer, fused: Iterable[nn.Parameter] = ()) -> None:
        self.optimizers = optimizers
        self.fused = list(fused)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)
        for weight in self.fused:
            if set_to_none:
                weight.grad = None
            elif weight.grad is not None:
                weight.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for opt in self.optimizers:
            saved = opt.state_dict()
            state.update({offset + int(i): values for i, values in saved["state"].items()})
            groups += [{**g, "params": [offset + i for i in g["params"]]} for g in saved["param_groups"]]
            offset += sum(len(g["params"]) for g in saved["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Raises ``ValueError`` when the saved groups do not match these optimizers' (another --optimizer)."""
        groups, state = state_dict["param_groups"], state_dict["state"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"the saved state has {len(groups)} parameter groups, these optimizers "
                             f"{len(self.param_groups)} (saved with another --optimizer?)")
        offset = first = 0
        for opt in self.optimizers:
            mine = groups[first:first + len(opt.param_groups)]
            count = sum(len(g["params"]) for g in mine)
            opt.load_state_dict({
                "state": {int(i) - offset: v for i, v in state.items() if offset <= int(i) < offset + count},
                "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in mine],
            })
            first, offset = first + len(mine), offset + count


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer | Optimizers:
    """The optimizer ``cfg.optimizer`` names, over ``model``'s trainable parameters (tied ones once).

    ``adamw``: one ``torch.optim.AdamW``. ``muon``: ``Optimizers(AdamW, Muon)``, split as
    ``muon_matrices`` says. Build it after ``model`` is on its device and wrapped (DDP).
    """
    params = {id(p): p for p in model.parameters() if p.requires_grad}  # tied weights once
    if cfg.optimizer == "adamw":
        return _adamw(params.values(), cfg)
    matrices = {id(p): p for p in muon_matrices(model).values()}
    fused = {id(w): (w, sizes) for w, sizes in _fused_qkv(model) if id(w) in matrices}
    muon_params = [t for key, p in matrices.items()
                   for t in (_row_blocks(*fused[key]) if key in fused else [p])]
    muon = torch.optim.Muon(muon_params, lr=cfg.lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw")
    rest = [p for key, p in params.items() if key not in matrices]
    return Optimizers(_adamw(rest, cfg), muon, fused=[w for w, _ in fused.values()])


def muon_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters Muon trains, by name: the trainable 2-D weights inside the Transformer blocks."""
    blocks = {id(m) for m in model.modules() if isinstance(m, Block)}
    found: dict[str, nn.Parameter] = {}
    for prefix, module in model.named_modules():
        if id(module) in blocks:
            found.update({f"{prefix}.{name}": p for name, p in module.named_parameters()
                          if p.requires_grad and p.dim() == 2})
    return found


def _fused_qkv(model: nn.Module) -> list[tuple[nn.Parameter, list[int]]]:
    """Each fused Q/K/V weight inside a block with its row counts ``[q_dim, kv_dim, kv_dim]``."""
    found = []
    for block in (m for m in model.modules() if isinstance(m, Block)):
        for attn in (m for m in block.modules() if isinstance(m, MultiHeadAttention) and m.fused_qkv):
            kv_dim = attn.n_kv_heads * attn.head_dim
            found.append((attn.qkv_proj.weight, [attn.n_heads * attn.head_dim, kv_dim, kv_dim]))
    return found


def _row_blocks(weight: nn.Parameter, sizes: list[int]) -> list[Tensor]:
    """Leaf tensors viewing ``weight``'s row blocks (sharing its storage), whose ``.grad`` follows
    ``weight.grad``'s rows after every backward pass (a post-accumulate-grad hook on ``weight``)."""
    blocks = [rows.requires_grad_() for rows in weight.detach().split(sizes)]

    def point_gradients(param: Tensor) -> None:
        for rows, grad in zip(blocks, param.grad.split(sizes), strict=True):  # type: ignore[union-attr]
            rows.grad = grad

    weight.register_post_accumulate_grad_hook(point_gradients)
    return blocks


def _adamw(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (embeddings, heads, and block weights without Muon) only."""
    params = list(params)
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing for this device/dtype
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
