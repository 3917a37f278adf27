"""Interventions started at the layer they change, all of them in one staircase of batches.

An intervention at layer ``l`` (remove a head, patch a position) leaves every layer below ``l``
unchanged, so its run can start from the clean run's residual stream entering block ``l``
(``hook_resid_pre``, recorded once). ``staircase`` runs every layer's interventions together: at
block ``l`` the ``n`` copies that change there join the batch (each copy a clean ``resid_pre`` of
layer ``l``), then block ``l`` runs once on every copy begun so far. Each block's weights are read
once for all copies (a matrix product of ``copies x tokens`` rows instead of the ``tokens`` rows of
one sequence), and no copy runs a block below its own layer: ``layers x n`` interventions cost
``n x layers x (layers + 1) / 2`` block passes of one sequence instead of ``n x layers^2``.

Only the stack's forward is replaced, for the duration of the call: the model's own embeddings,
masks, positions, encoder (for a decoder's cross-attention) and output head run as usual, and the
interventions are hooks on the named hook points as elsewhere in ``attnlab.interpret``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from attnlab.inspect import hooks_attached
from attnlab.interpret import _names
from attnlab.interpret._model import Inputs, Metric, ModelView, StackView

#: The rows (copies x tokens) one staircase may hold at its widest; more layers are split into groups.
ROWS_PER_PASS = 8192
#: ``edit(layer, act)``: the activation of the ``n`` copies that begin at ``layer``, ``(n, batch, ...)``
#: -> the edited activation, same shape.
Edit = Callable[[int, Tensor], Tensor]


def reads_last_position(metric: Metric) -> bool:
    """Whether ``metric`` reads only the last position of the output (set by ``attnlab.interpret.metrics``)."""
    return bool(getattr(metric, "last_position_only", False))


@contextlib.contextmanager
def _stack_replaced(stack: nn.Module, forward: Callable[..., Tensor]) -> Iterator[None]:
    """``stack.forward`` is ``forward`` inside the block (an instance attribute over the class's method)."""
    stack.forward = forward
    try:
        yield
    finally:
        del stack.forward


@contextlib.contextmanager
def last_position_out(view: ModelView, when: bool) -> Iterator[None]:
    """Inside the block (``when``), the output stack hands only its last position to the model's head,
    so a head over a large vocabulary reads out one position, not all (for metrics that read only it)."""
    if not when:
        yield
        return
    stack = view.stack(None).stack
    forward = stack.forward
    with _stack_replaced(stack, lambda *args, **kwargs: forward(*args, **kwargs)[:, -1:]):
        yield


def _copies_of(value: object, batch: int, rows: int, copies: int) -> object:
    """A block argument for ``copies`` stacked copies of a batch of ``batch`` rows: tensors whose first
    dimension holds the model's batch (``rows`` of it) are cut to one batch and tiled; the rest
    (broadcast masks, shared positions, flags) pass as they are."""
    if isinstance(value, Tensor) and value.dim() >= 2 and value.shape[0] == rows:
        first = value[:batch]
        return first.repeat(copies, *([1] * (value.dim() - 1)))
    return value


def staircase(
    view: ModelView,
    sv: StackView,
    inputs: Inputs,
    resid_pre: list[Tensor],
    n: int,
    point: str,
    edit: Edit,
    *,
    last_only: bool = False,
    layers: range | None = None,
) -> Tensor:
    """The model's output for ``n`` copies of ``inputs`` per layer of ``sv`` (``layers``: only those;
    default all), copy ``(l, i)`` edited by ``edit`` at hook point ``{stack}.blocks.{l}.{point}`` and
    run from block ``l`` on.

    ``resid_pre[l]``: the clean run's ``hook_resid_pre`` of block ``l`` on ``inputs``, ``(batch, seq,
    d_model)``. Returns the output stacked over copies in the order ``(layer, i, batch row)``:
    ``(layers * n * batch, ...)``; only ``resid_pre[l]`` of the layers run is read (``layers``: a
    range of step 1). ``last_only``: the output stack's output keeps only its last
    position (for metrics that read only it; the read-out's cost drops by the sequence length).
    """
    model = view.model
    batch = view.batch_size(inputs)
    layers = range(sv.n_layers) if layers is None else layers
    tokens = resid_pre[layers[0]].shape[0] * resid_pre[layers[0]].shape[1]
    group = max(1, ROWS_PER_PASS // max(1, n * tokens))
    is_output = sv.name == view.output_stack
    outs: list[Tensor] = []
    for first in range(layers[0], layers[-1] + 1, group):
        starts = range(first, min(first + group, layers[-1] + 1))
        copies = len(starts) * n
        # a stack below the output stack (an encoder-decoder's encoder) feeds a decoder that must see
        # every copy: the model then runs on stacked copies; the output stack is fed by the tail alone.
        run_inputs = inputs if is_output else view.repeat(inputs, copies)
        rows = view.batch_size(run_inputs)

        def tail(x: Tensor, starts: range = starts, rows: int = rows, **kwargs: object) -> Tensor:
            del x  # the embeddings of the inputs: every copy starts from a recorded resid_pre instead
            kwargs.pop("cache", None)
            h: Tensor | None = None
            for layer in range(starts[0], sv.n_layers):
                if layer in starts:
                    new = resid_pre[layer].repeat(n, 1, 1)
                    h = new if h is None else torch.cat([h, new])
                assert h is not None
                active = h.shape[0] // batch
                args = {k: _copies_of(v, batch, rows, active) for k, v in kwargs.items()}
                h = sv.stack.blocks[layer](h, **args)
            assert h is not None
            if last_only and is_output:
                h = h[:, -1:]
            if sv.stack.final_norm is not None:
                h = sv.stack.final_norm(h)
            return sv.stack.hook_resid_final(h)

        def hook_for(layer: int) -> Callable[[nn.Module, object, Tensor], Tensor]:
            def hook(_module: nn.Module, _inputs: object, act: Tensor) -> Tensor:
                new = act[-n * batch:].reshape(n, batch, *act.shape[1:])  # the copies that begin here
                return torch.cat([act[:-n * batch], edit(layer, new).reshape(n * batch, *act.shape[1:])])

            return hook

        hooks = {_names.block(model, sv.name, layer, point): hook_for(layer) for layer in starts}
        with torch.no_grad(), _stack_replaced(sv.stack, tail), hooks_attached(model, hooks):
            outs.append(view.run(run_inputs))
    return torch.cat(outs)


def metric_values(metric: Metric, out: Tensor, n_layers: int, n: int) -> Tensor:
    """``(layers, n)``: ``metric`` of each copy of ``staircase``'s output, averaged over the batch."""
    return metric(out).float().view(n_layers, n, -1).mean(dim=-1)


def clean_run(view: ModelView, sv: StackView, inputs: Inputs, extra: list[str] = ()) -> tuple[Tensor, list[Tensor], dict[str, Tensor]]:
    """One clean run: ``(output, resid_pre per layer of sv, the extra recorded activations)``."""
    names = [f"{sv.name}.blocks.{layer}.hook_resid_pre" for layer in range(sv.n_layers)]
    out, cache = view.cache(inputs, [*names, *extra])
    return out, [cache[name] for name in names], {name: cache[name] for name in extra}


def ablation_effects(
    view: ModelView, sv: StackView, inputs: Inputs, metric: Metric, kind: str, method: str,
) -> tuple[Tensor, float]:
    """``(effects (layers, heads), clean metric)`` of removing each head of ``sv`` alone (``kind``:
    ``attn`` or ``cross_attn``; ``method``: ``zero`` or ``mean``), as ``head_effects`` defines them."""
    H = sv.n_heads
    z_names = [f"{sv.name}.blocks.{layer}.{kind}.hook_z" for layer in range(sv.n_layers)] if method == "mean" else []
    out, resid_pre, zs = clean_run(view, sv, inputs, z_names)
    baseline = float(metric(out).float().mean())
    means = [zs[name].mean(dim=(0, 2)) for name in z_names]  # per layer (heads, d_k)
    eye = torch.eye(H, dtype=torch.bool, device=view.device)[:, None, :, None, None]  # copy i removes head i

    def edit(layer: int, z: Tensor) -> Tensor:  # z: (H, batch, heads, seq, d_k)
        fill = torch.zeros((), dtype=z.dtype, device=z.device) if method == "zero" else means[layer][:, None].to(z.dtype)
        return torch.where(eye, fill, z)

    out = staircase(view, sv, inputs, resid_pre, H, f"{kind}.hook_z", edit,
                    last_only=reads_last_position(metric))
    values = metric_values(metric, out, sv.n_layers, H)
    return values - baseline, baseline


def ablated_from(view: ModelView, sv: StackView, inputs: Inputs, resid_pre: list[Tensor], layer: int, head: int,
                 kind: str, last_only: bool) -> Tensor:
    """The output with head ``(layer, head)`` of ``sv`` zeroed (``kind``: ``attn`` or ``cross_attn``),
    run from block ``layer`` on, starting from the clean run's ``resid_pre[layer]``."""
    mask = torch.zeros(sv.n_heads, dtype=torch.bool, device=view.device)
    mask[head] = True

    def edit(_layer: int, z: Tensor) -> Tensor:  # z: (1, batch, heads, seq, d_k)
        return torch.where(mask[None, None, :, None, None], torch.zeros((), dtype=z.dtype, device=z.device), z)

    return staircase(view, sv, inputs, resid_pre, 1, f"{kind}.hook_z", edit, last_only=last_only,
                     layers=range(layer, layer + 1))


def patch_values(
    view: ModelView, sv: StackView, receiver: Inputs, donor: Inputs, metric: Metric, point: str, per_head: bool,
) -> tuple[Tensor, float, float]:
    """``(values (layers, n), receiver's metric, donor's metric)`` of activation patching at ``point``
    (``{stack}.blocks.{l}.{point}``): copy ``i`` of layer ``l`` gets the donor's activation at
    position ``i`` (``per_head``: of head ``i`` at every position), as ``patch`` defines it."""
    names = [f"{sv.name}.blocks.{layer}.{point}" for layer in range(sv.n_layers)]
    donor_out, cache = view.cache(donor, names)
    out, resid_pre, _ = clean_run(view, sv, receiver)
    baseline = float(metric(out).float().mean())
    source = float(metric(donor_out).float().mean())
    n = sv.n_heads if per_head else view.ids(receiver, sv.name).shape[1]
    pick = torch.eye(n, dtype=torch.bool, device=view.device)

    def edit(layer: int, act: Tensor) -> Tensor:  # (n, batch, heads, seq, d_k) or (n, batch, seq, d_model)
        shape = [n, 1, n] + [1] * (act.dim() - 3)  # copy i: head i, or position i
        return torch.where(pick.view(shape), cache[names[layer]][None].to(act.dtype), act)

    out = staircase(view, sv, receiver, resid_pre, n, point, edit,
                    last_only=reads_last_position(metric))
    return metric_values(metric, out, sv.n_layers, n), baseline, source
