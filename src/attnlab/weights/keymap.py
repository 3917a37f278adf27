"""Declarative two-way key maps between attnlab state dicts and other checkpoint layouts.

A map is a list of ``Rule``s, each pairing attnlab keys with checkpoint ("theirs") keys and naming
the ``Transform`` between them; ``{layer}`` in a key stands for every block index. The same rules
run in both directions, so import and export cannot drift apart (the LitGPT / nanoGPT way).

Before a tensor is copied, the whole key set and every shape are checked against what the config
expects: a missing or unexpected key is an error naming the key, a wrong shape names the key and
both shapes; a tensor of the wrong dtype (integers or booleans for a float weight) or with NaN or
infinite values names the key too. The expected checkpoint layout is not written down twice: it is derived by running the
map backwards over the target model's state dict built on the ``meta`` device (shapes, no memory).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

StateDict = dict[str, Tensor]


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the config: a missing, unexpected or wrongly shaped key."""


@dataclass(frozen=True)
class Transform:
    """A named, invertible tensor mapping: ``to_ours`` reads a checkpoint, ``to_theirs`` writes one.

    Each side takes and returns a list, so one checkpoint tensor can become several of ours (a fused
    QKV split in three) and the other way round.
    """

    name: str
    to_ours: Callable[[Sequence[Tensor]], list[Tensor]]
    to_theirs: Callable[[Sequence[Tensor]], list[Tensor]]

    def then(self, other: Transform) -> Transform:
        """This transform followed by ``other`` (on the way to ours; reversed on the way back)."""
        return Transform(
            f"{self.name}+{other.name}",
            lambda ts: other.to_ours(self.to_ours(ts)),
            lambda ts: self.to_theirs(other.to_theirs(ts)),
        )


IDENTITY = Transform("identity", list, list)
# GPT-2's Conv1D stores (in, out); nn.Linear stores (out, in).
TRANSPOSE = Transform("transpose", lambda ts: [ts[0].t()], lambda ts: [ts[0].t()])


def fuse(sizes: Sequence[int]) -> Transform:
    """Several checkpoint tensors (e.g. q, k, v) concatenated along dim 0 into one of ours."""
    sizes = list(sizes)
    return Transform(
        "fuse",
        lambda ts: [torch.cat(list(ts), dim=0)],
        lambda ts: list(ts[0].split(sizes, dim=0)),
    )


def split(sizes: Sequence[int]) -> Transform:
    """One fused checkpoint tensor cut along dim 0 into several of ours (the inverse of ``fuse``)."""
    f = fuse(sizes)
    return Transform("split", f.to_theirs, f.to_ours)


@dataclass(frozen=True)
class Rule:
    """attnlab key(s) <-> checkpoint key(s) through a named transform."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    transform: Transform = IDENTITY

    def at(self, layer: int) -> Rule:
        return Rule(
            tuple(k.format(layer=layer) for k in self.ours),
            tuple(k.format(layer=layer) for k in self.theirs),
            self.transform,
        )

    @property
    def per_layer(self) -> bool:
        return any("{layer}" in k for k in (*self.ours, *self.theirs))


def _keys(k: str | Sequence[str]) -> tuple[str, ...]:
    return (k,) if isinstance(k, str) else tuple(k)


def rule(ours: str | Sequence[str], theirs: str | Sequence[str], transform: Transform = IDENTITY) -> Rule:
    """Shorthand: a single key may be given as a string."""
    return Rule(_keys(ours), _keys(theirs), transform)


def _names(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def layout_differences(
    expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]], optional: Collection[str] = (),
) -> tuple[list[str], list[str], list[str]]:
    """The one key/shape comparison of every weight loader (checkpoints, sharded checkpoints, Hugging Face
    and GGUF imports): ``(missing, unexpected, wrong_shape)`` names, given ``{name: shape}`` of what a model
    expects and of what a file holds. ``missing``: expected names absent from ``found`` (those in
    ``optional`` excepted), in ``expected``'s order; ``unexpected`` and ``wrong_shape``: names of ``found``,
    in its order. Allocates nothing (shapes only)."""
    missing = [k for k in expected if k not in found and k not in optional]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in found if k in expected and tuple(found[k]) != tuple(expected[k])]
    return missing, unexpected, wrong


def check_keys_and_shapes(
    given: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    *,
    what: str,
    optional: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Raise ``CheckpointMismatchError`` unless ``given`` has exactly ``expected``'s keys and shapes
    (``layout_differences``; the first kind of difference found is named)."""
    missing, unexpected, wrong = layout_differences({k: t.shape for k, t in expected.items()},
                                                    {k: t.shape for k, t in given.items()}, optional)
    if missing:
        raise CheckpointMismatchError(f"{what} is missing key(s) {_names(missing)}")
    if unexpected:
        raise CheckpointMismatchError(
            f"{what} has unexpected key(s) {_names(unexpected)}; does the config match the checkpoint?"
        )
    if wrong:
        k = wrong[0]
        raise CheckpointMismatchError(
            f"shape mismatch for {k!r}: {what} has {tuple(given[k].shape)}, "
            f"the config expects {tuple(expected[k].shape)}"
        )


def bad_values(given: Mapping[str, Tensor], expected: Mapping[str, Tensor], limit: int = 3) -> str | None:
    """What is wrong with the values of ``given``'s tensors, or None: a tensor whose dtype does not fit
    (floating point where ``expected``, the model's tensor, is floating point, the same dtype
    otherwise), or a floating-point tensor holding NaN or infinite values (first ``limit`` of each).

    Such a file (int64, bool or NaN weights) would otherwise load silently and generate garbage.
    """
    wrong, broken = [], []
    for k, tensor in given.items():
        want = expected.get(k)
        if want is not None and (tensor.is_floating_point() != want.is_floating_point()
                                 or (not want.is_floating_point() and tensor.dtype != want.dtype)):
            kind = "a floating-point dtype" if want.is_floating_point() else str(want.dtype).removeprefix("torch.")
            wrong.append(f"{k!r} is {str(tensor.dtype).removeprefix('torch.')} (expected {kind})")
        elif tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            broken.append(f"{k!r} holds {bad} NaN or infinite value{'s' if bad != 1 else ''}")
    problems = [*wrong[:limit], *broken[:limit]]
    more = len(wrong) + len(broken) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more else "") if problems else None


@dataclass
class KeyMap:
    """A complete two-way map for one architecture and one config.

    ``ours_tied`` / ``theirs_tied`` map an alias key to the key whose tensor it shares (a tied output
    layer): aliases are written on export, optional on import, and must equal their source.
    ``ignore`` holds regular expressions of checkpoint keys that are buffers, not weights
    (``attn.bias`` causal masks, ``position_ids``, rotary ``inv_freq``); they are dropped on import.
    """

    name: str
    rules: list[Rule]
    n_layers: int
    ours_tied: dict[str, str] = field(default_factory=dict)
    theirs_tied: dict[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()

    def concrete_rules(self) -> list[Rule]:
        """Rules with ``{layer}`` expanded for every block."""
        out: list[Rule] = []
        for r in self.rules:
            if r.per_layer:
                out.extend(r.at(i) for i in range(self.n_layers))
            else:
                out.append(r)
        return out

    def _apply(self, sd: Mapping[str, Tensor], *, to_ours: bool) -> StateDict:
        out: StateDict = {}
        for r in self.concrete_rules():
            src, dst = (r.theirs, r.ours) if to_ours else (r.ours, r.theirs)
            fn = r.transform.to_ours if to_ours else r.transform.to_theirs
            results = fn([sd[k] for k in src])
            for key, tensor in zip(dst, results, strict=True):
                out[key] = tensor.contiguous()
        return out

    def _drop_aliases(self, sd: Mapping[str, Tensor], tied: dict[str, str], what: str) -> StateDict:
        """Remove alias keys after checking that each equals the tensor it is tied to."""
        for alias, source in tied.items():
            if alias in sd and source in sd and not torch.equal(sd[alias], sd[source]):
                raise CheckpointMismatchError(
                    f"{what}: {alias!r} differs from {source!r}, but they are one tied tensor in this model"
                )
        return {k: v for k, v in sd.items() if k not in tied}

    def expected_theirs(self, reference: Mapping[str, Tensor]) -> StateDict:
        """The checkpoint layout (keys and shapes, aliases included) implied by our reference state dict."""
        expected = self._apply({k: v for k, v in reference.items() if k not in self.ours_tied}, to_ours=False)
        return {**expected, **{alias: expected[source] for alias, source in self.theirs_tied.items()}}

    def check_layout(self, theirs: Mapping[str, Tensor], reference: Mapping[str, Tensor], *,
                     values: bool = False) -> StateDict:
        """``theirs`` without ignored keys, after checking its keys and shapes against ``reference`` (ours,
        may be meta), and with ``values`` its dtypes and finiteness (``bad_values``); ``theirs`` may be
        meta tensors (a file's header) when ``values`` is False. Raises ``CheckpointMismatchError``."""
        what = f"the {self.name} state dict"
        theirs = {k: v for k, v in theirs.items() if not any(re.search(p, k) for p in self.ignore)}
        expected = self.expected_theirs(reference)
        check_keys_and_shapes(theirs, expected, what=what, optional=set(self.theirs_tied))
        problem = bad_values(theirs, expected) if values else None
        if problem is not None:
            raise CheckpointMismatchError(f"{what} has unusable weights: {problem}")
        return theirs

    def to_ours(self, theirs: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> StateDict:
        """Checkpoint state dict -> attnlab state dict, checked against ``reference`` (ours, may be meta)."""
        what = f"the {self.name} state dict"
        theirs = self.check_layout(theirs, reference, values=True)
        theirs = self._drop_aliases(theirs, self.theirs_tied, what)
        out = self._apply(theirs, to_ours=True)
        for alias, source in self.ours_tied.items():
            out[alias] = out[source]
        check_keys_and_shapes(out, reference, what="the converted state dict")
        return out

    def to_theirs(self, ours: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> StateDict:
        """attnlab state dict -> checkpoint state dict (aliases of tied weights included)."""
        check_keys_and_shapes(ours, reference, what="the attnlab state dict", optional=set(self.ours_tied))
        out = self._apply(self._drop_aliases(ours, self.ours_tied, "the attnlab state dict"), to_ours=False)
        for alias, source in self.theirs_tied.items():
            out[alias] = out[source]
        return out

