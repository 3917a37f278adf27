"""Weight-only int8 / int4 quantization for inference: smaller weights, fewer bytes read per token.

A batch-1 decoding step is memory-bound: it reads every weight once and does two flops per weight.
Storing the weights of every ``nn.Linear`` as 8-bit (or 4-bit) integers with a floating-point scale
reads 4x (or ~7x) fewer bytes than float32, so the bound on tokens per second rises in proportion.
Activations, norms, embeddings and the KV cache stay in floating point ("weight-only").

``quantize(model, "int8" | "int4")`` returns a copy of ``model`` (``inplace=True`` changes it) in
which every ``nn.Linear`` is a ``QuantizedLinear``; everything else is unchanged, so
``attnlab.generate`` and the encoders' ``forward`` run on it as before, ``compile=True`` included.
``attnlab.load(name, quantize="int8")`` does the same to a catalogue model (a cached copy; the
float32 model stays as it was).

Schemes (``W`` is a layer's ``(out_features, in_features)`` float weight):

* ``int8``: symmetric, per output channel (``group_size=0``, the default; the layout of PyTorch's
  int8 kernel): ``scale[o] = max|W[o, :]| / 127``, ``q = round(W / scale)`` in ``[-127, 127]``
  (int8), ``W ~= q * scale``; or per group of ``group_size`` inputs (``scale`` per group, the layout
  of GGUF's Q8_0; no kernel, so always the dequantize path).
* ``int4``: per group of ``group_size`` consecutive inputs of one output channel (default 32, the
  block of GGUF's Q4_0/Q4_1), asymmetric (min/max): ``scale = (max - min) / 15``,
  ``q = round((W - min) / scale)`` in ``[0, 15]``, ``W ~= q * scale + min``. ``in_features`` must be
  a multiple of ``group_size``. On weights that came from a Q4_1 file (SmolLM2's) the groups and the
  grid are the file's own, so the 4-bit values are recovered exactly.
* The output layer (a module named ``lm_head``) takes ``output_scheme`` (default ``int8`` for both
  schemes: the logits decide every token, and 4 bits there changes greedy choices; llama.cpp's 4-bit
  files likewise keep it at 6-8 bits) and ``output_group_size``: by default per channel where the
  int8 kernel runs (the eager-speed path), else groups of 32, the layout of GGUF's Q8_0, which
  recovers SmolLM2's output layer exactly. It is ~1/5 of SmolLM2's weights.

How the product is computed (``QuantizedLinear.quant_path``; the model's ``quant_path`` names the
paths its layers use, never silently float32 weights):

* ``"int8-kernel"`` / ``"int4-kernel"``: PyTorch's CPU kernels ``aten._weight_int8pack_mm`` and
  ``aten._weight_int4pack_mm_for_cpu`` read the integer weights directly. On CPU they are
  vectorised for bfloat16 activations only (float32 input runs a scalar loop ~10x slower), so the
  input is rounded to bfloat16 for the product and the output returned in the input's dtype: a
  second, small rounding on top of the weights'. With more than ``KERNEL_MAX_ROWS`` rows (an encoder's
  batch, a long prompt) an int8 layer multiplies by its dequantized weight instead: there the
  product is compute-bound, the kernel is slow, and rebuilding the weight once costs little.
* ``"int8-dequantize"`` / ``"int4-dequantize"`` (the fallback, and ``path="dequantize"``): the
  weight is rebuilt in the input's dtype for each call (``q * scale (+ min)``) and multiplied with
  ``F.linear``: exact float arithmetic on the quantized weights, on any device, but a full-size float
  weight per call: slower than float32 (several times, for int4), eager or compiled.

Under ``torch.compile`` (``generate(..., compile=True)``) an int8 layer fed one row (a decoding step)
computes the product as a multiply and a sum over the int8 weight, whatever its path: Inductor
compiles that into one loop reading each int8 weight once, with float32 activations (~1.6x a float32
compiled product of the same shape here; Inductor cannot lower ``_weight_int8pack_mm`` on a fused
input). int4 kernel layers call the kernel from the compiled graph; an int4 dequantize layer stays
slow (Inductor's loops over unpacked nibbles were ~5x slower than float32 in a measurement here).

``path="auto"`` (default) takes the kernel when a probe call on this device succeeds and the
dequantize path otherwise. torchao (read in its source, not installed here) does int8 weight-only
with float activations as this dequantize-and-multiply (``_linear_fp_act_int8_weight_impl``, its
``_weight_int8pack_mm`` call left as a TODO) and its int4 CPU layout calls the same aten kernel, so
attnlab carries no extra dependency for it.

Quantized models are for inference only: ``train()`` raises ``QuantizationError``, every remaining
parameter has ``requires_grad=False``, and a forward whose input requires a gradient raises.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Scheme = Literal["int8", "int4"]
Path = Literal["auto", "kernel", "dequantize"]
SCHEMES = ("int8", "int4")
PATHS = ("auto", "kernel", "dequantize")
INT4_GROUP_SIZE = 32
OUTPUT_GROUP_SIZE = 32  # the output layer's groups on the dequantize path
KERNEL_MAX_ROWS = 16


class QuantizationError(ValueError):
    """A scheme, path or layer shape that cannot be quantized, or training asked of a quantized model."""


TRAINING_REFUSED = (
    "this model is weight-only quantized ({path}) and can only run inference: its weights are fixed integers "
    "with no gradient. Train the float model, then quantize it."
)


def quantize_int8(weight: Tensor, group_size: int = 0) -> tuple[Tensor, Tensor]:
    """``(out, in)`` float weight -> ``(q int8 (out, in), scale float32)``: ``scale`` is ``(out,)`` per channel
    (``group_size=0``, ``W ~= q * scale[:, None]``) or ``(out, in/g)`` per group of ``group_size`` inputs.
    Raises ``QuantizationError`` when ``in`` is not a multiple of ``group_size``."""
    out_f, in_f = weight.shape
    g = group_size or in_f
    if group_size < 0 or in_f % g:
        raise QuantizationError(f"int8 needs in_features ({in_f}) to be a multiple of group_size ({group_size})")
    w = weight.detach().float().reshape(out_f, in_f // g, g)
    scale = (w.abs().amax(dim=-1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[..., None]).clamp(-127, 127).to(torch.int8).reshape(out_f, in_f)
    return q, (scale[:, 0] if group_size == 0 else scale)


def quantize_int4(weight: Tensor, group_size: int = INT4_GROUP_SIZE) -> tuple[Tensor, Tensor, Tensor]:
    """``(out, in)`` float weight -> ``(q int32 in [0, 15] (out, in), scale (out, in/g), minimum (out, in/g))``
    float32; ``W ~= q * scale + minimum`` per group of ``group_size`` inputs. Raises ``QuantizationError``
    when ``in`` is not a multiple of ``group_size``."""
    out_f, in_f = weight.shape
    if group_size < 2 or in_f % group_size:
        raise QuantizationError(f"int4 needs in_features ({in_f}) to be a multiple of group_size ({group_size})")
    w = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    lo, hi = w.amin(-1), w.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((w - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    return q.reshape(out_f, in_f), scale, lo


def _pack_nibbles(q: Tensor) -> Tensor:
    """int32 ``(out, in)`` in [0, 15] -> uint8 ``(out, in/2)``: even inputs in the low nibble."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def _unpack_nibbles(packed: Tensor) -> Tensor:
    return torch.stack([packed & 15, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


class QuantizedLinear(nn.Module):
    """``nn.Linear`` with int8 or int4 weights, for inference: ``(..., in) -> (..., out)`` in the input's dtype.

    Build one with ``QuantizedLinear.from_linear(linear, scheme, group_size=..., path="auto")``.
    Buffers (no parameters): ``int8``: ``qweight`` int8 ``(out, in)``, ``scale`` float32 ``(out,)`` (or
    ``(out, in/g)`` with groups);
    ``int4``, kernel path: ``qweight`` uint8 in the kernel's packed layout ``(out, in/2)`` and
    ``scales_and_zeros`` ``(in/g, out, 2)``; ``int4``, dequantize path: ``qweight`` uint8 ``(out, in/2)``
    (two 4-bit values a byte), ``scale`` and ``minimum`` ``(out, in/g)``; ``bias`` float ``(out,)`` or None.
    ``quant_path`` says how the product is computed (see the module docstring).
    """

    def __init__(self, in_features: int, out_features: int, scheme: Scheme, group_size: int, quant_path: str) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scheme, self.group_size, self.quant_path = scheme, group_size, quant_path
        self.bias: Tensor | None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, scheme: Scheme, *, group_size: int | None = None, path: Path = "auto"
    ) -> QuantizedLinear:
        """Quantize one layer (its weight is read, not changed). Raises ``QuantizationError`` for an
        unknown scheme or path, an int4 shape the groups do not divide, or ``path="kernel"`` where
        the kernel does not run."""
        if scheme not in SCHEMES:
            raise QuantizationError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
        if path not in PATHS:
            raise QuantizationError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
        if group_size is None:
            group_size = 0 if scheme == "int8" else INT4_GROUP_SIZE
        weight = linear.weight.detach()
        out_f, in_f = weight.shape
        use_kernel = path != "dequantize" and kernel_available(scheme, weight.device, group_size)
        if scheme == "int4" and use_kernel and out_f % 16:  # the packed layout tiles output channels
            use_kernel = False
        if path == "kernel" and not use_kernel:
            raise QuantizationError(f"the {scheme} kernel does not run on {weight.device} in torch {torch.__version__}"
                                    f" for group_size={group_size}; use path='dequantize' or 'auto'")
        layer = cls(in_f, out_f, scheme, group_size, f"{scheme}-{'kernel' if use_kernel else 'dequantize'}")
        if scheme == "int8":
            q, scale = quantize_int8(weight, group_size)
            layer.register_buffer("qweight", q)
            layer.register_buffer("scale", scale)
        else:
            q, scale, lo = quantize_int4(weight, group_size)
            if use_kernel:
                layer.register_buffer("qweight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
                # the kernel's convention: W = (q - 8) * scale + zero, so zero = min + 8 * scale
                layer.register_buffer("scales_and_zeros", torch.stack([scale, lo + 8 * scale], -1).transpose(0, 1)
                                      .contiguous().to(torch.bfloat16))
            else:
                layer.register_buffer("qweight", _pack_nibbles(q))
                layer.register_buffer("scale", scale)
                layer.register_buffer("minimum", lo)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        layer.register_buffer("bias", bias)
        return layer

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The float ``(out, in)`` weight the integers stand for (what the dequantize path multiplies by)."""
        if self.scheme == "int8" and self.group_size == 0:
            return self.qweight.to(dtype) * self.scale.to(dtype)[:, None]
        if self.scheme == "int8":
            groups = self.qweight.to(dtype).reshape(self.out_features, -1, self.group_size)
            return (groups * self.scale.to(dtype)[..., None]).reshape(self.out_features, self.in_features)
        if self.quant_path == "int4-kernel":  # read back through the kernel: an identity matrix as input
            eye = torch.eye(self.in_features, dtype=torch.bfloat16, device=self.qweight.device)
            return torch.ops.aten._weight_int4pack_mm_for_cpu(
                eye, self.qweight, self.group_size, self.scales_and_zeros).t().to(dtype)
        groups = _unpack_nibbles(self.qweight).to(dtype).reshape(self.out_features, -1, self.group_size)
        return (groups * self.scale.to(dtype)[..., None] + self.minimum.to(dtype)[..., None]).reshape(
            self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            raise QuantizationError(TRAINING_REFUSED.format(path=self.quant_path))
        compiling = torch.compiler.is_compiling()
        if compiling and self.scheme == "int8" and x.numel() == self.in_features:  # a decoding step
            y = self._streamed_int8(x)
            return y if self.bias is None else y + self.bias.to(y.dtype)
        kernel = not compiling and x.numel() <= KERNEL_MAX_ROWS * self.in_features
        if self.quant_path == "int8-kernel" and kernel:
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            y = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scale.to(torch.bfloat16))
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        elif self.quant_path == "int4-kernel":
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.qweight, self.group_size, self.scales_and_zeros)
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        elif self.scheme == "int8" and self.group_size == 0:  # scale after the product: one multiply per output, not per weight
            y = F.linear(x, self.qweight.to(x.dtype)) * self.scale.to(x.dtype)
        else:
            y = F.linear(x, self.dequantized_weight(x.dtype))
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def _streamed_int8(self, x: Tensor) -> Tensor:
        """One row times the int8 weight as a multiply and a sum (a matrix product would first build a
        float weight): Inductor compiles it into one loop that reads each int8 weight once."""
        w = self.qweight.to(x.dtype)
        if self.group_size == 0:
            return (x.unsqueeze(-2) * w).sum(-1) * self.scale.to(x.dtype)
        groups = w.reshape(self.out_features, -1, self.group_size)
        xg = x.reshape(*x.shape[:-1], 1, groups.shape[1], self.group_size)
        return ((xg * groups).sum(-1) * self.scale.to(x.dtype)).sum(-1)

    def train(self, mode: bool = True) -> QuantizedLinear:
        if mode:
            raise QuantizationError(TRAINING_REFUSED.format(path=self.quant_path))
        return super().train(False)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ", per channel"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"scheme={self.scheme}{group}, quant_path={self.quant_path}")


_KERNEL_PROBES: dict[tuple[str, str, int], bool] = {}


def kernel_available(scheme: Scheme, device: torch.device | str, group_size: int = 0) -> bool:
    """Whether PyTorch's integer-weight kernel for ``scheme`` runs on ``device`` (a tiny probe call, cached).

    int8 uses ``aten._weight_int8pack_mm`` (per channel only: False for ``group_size > 0``); int4
    ``aten._weight_int4pack_mm_for_cpu`` (CPU only).
    """
    device = torch.device(device)
    if scheme == "int8" and group_size:
        return False
    key = (scheme, device.type, group_size)
    if key not in _KERNEL_PROBES:
        _KERNEL_PROBES[key] = _probe(scheme, device, group_size)
    return _KERNEL_PROBES[key]


def _probe(scheme: Scheme, device: torch.device, group_size: int) -> bool:
    out_f, in_f = 32, max(64, 2 * group_size)
    x = torch.ones(1, in_f, dtype=torch.bfloat16, device=device)
    try:
        if scheme == "int8":
            w = torch.ones(out_f, in_f, dtype=torch.int8, device=device)
            y = torch.ops.aten._weight_int8pack_mm(x, w, torch.ones(out_f, dtype=torch.bfloat16, device=device))
            return bool(torch.allclose(y.float(), torch.full_like(y.float(), in_f)))
        if device.type != "cpu" or in_f % group_size:
            return False
        q = torch.full((out_f, in_f), 9, dtype=torch.int32)  # (9 - 8) * 1 + 0 = 1
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        sz = torch.stack([torch.ones(in_f // group_size, out_f), torch.zeros(in_f // group_size, out_f)], -1)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, sz.to(torch.bfloat16))
        return bool(torch.allclose(y.float(), torch.full_like(y.float(), in_f)))
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


def quantize(
    model: nn.Module,
    scheme: Scheme,
    *,
    group_size: int | None = None,
    path: Path = "auto",
    output_scheme: Scheme = "int8",
    output_group_size: int | None = None,
    inplace: bool = False,
) -> nn.Module:
    """``model`` with every ``nn.Linear`` replaced by a ``QuantizedLinear`` (see the module docstring).

    ``group_size``: int8 0 (per channel, default) or a group; int4 default 32. ``output_scheme`` and
    ``output_group_size`` are those of the output layer (``lm_head``; group default: see the module docstring). Returns a copy unless ``inplace``;
    the result is in eval mode, its remaining parameters have ``requires_grad=False``, ``train()`` raises
    ``QuantizationError``, and ``model.quant_path`` names the paths its layers took (``"int8-kernel"``, ``"int4-dequantize"``, or ``"mixed: ..."``).
    A tied output layer (``lm_head.weight is embed.token.weight``) gets its own quantized copy; the
    embedding stays float (a lookup reads one row). Raises ``QuantizationError`` for an unknown
    scheme or path, a model without linear layers, or (int4) an ``in_features`` the groups do not divide.
    """
    for value in (scheme, output_scheme):
        if value not in SCHEMES:
            raise QuantizationError(f"unknown scheme {value!r}; choose one of {', '.join(SCHEMES)}")
    if getattr(model, "quant_path", None) is not None:
        raise QuantizationError(f"this model is already quantized ({model.quant_path})")
    if not inplace:
        model = copy.deepcopy(model)
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not targets:
        raise QuantizationError(f"{type(model).__name__} has no nn.Linear layers to quantize")
    paths = set()
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        try:
            if child == "lm_head":  # path="kernel" asks it of the layers whose layout has one
                out_path = "auto" if path == "kernel" else path
                if output_group_size is None:
                    kernel = out_path != "dequantize" and kernel_available(output_scheme, linear.weight.device, 0)
                    output_group_size = 0 if kernel and output_scheme == "int8" else OUTPUT_GROUP_SIZE
                layer = QuantizedLinear.from_linear(linear, output_scheme, group_size=output_group_size, path=out_path)
            else:
                layer = QuantizedLinear.from_linear(linear, scheme, group_size=group_size, path=path)
        except QuantizationError as exc:
            raise QuantizationError(f"layer {name!r}: {exc}") from None
        setattr(parent, child, layer)
        paths.add(layer.quant_path)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    model.quant_path = paths.pop() if len(paths) == 1 else "mixed: " + ", ".join(sorted(paths))
    _refuse_training(model)
    return model


def _refuse_training(model: nn.Module) -> None:
    """Make ``model.train()`` raise (``model.eval()`` / ``train(False)`` still work) on this instance only."""
    original = model.train

    def train(mode: bool = True) -> nn.Module:
        if mode:
            raise QuantizationError(TRAINING_REFUSED.format(path=model.quant_path))
        return original(False)

    model.train = train  # type: ignore[method-assign]


@dataclasses.dataclass
class _Copy:
    """A cached quantized copy and the state of its source's tensors when it was made. It holds
    nothing that may refer to the source (the ``LoadedModel`` around the copy only weakly), so the
    source can be freed while its copy is cached."""

    tensors: list[tuple[weakref.ref[Tensor], int]]  # each parameter and buffer, and its in-place version
    model: nn.Module
    wrapped: weakref.ref[Any] | None = None  # the LoadedModel last returned around ``model``

    def fits(self, source: nn.Module) -> bool:
        now = list(_tensors(source))
        return len(now) == len(self.tensors) and all(
            ref() is t and version == _version(t) for (ref, version), t in zip(self.tensors, now, strict=True)
        )


def _tensors(model: nn.Module) -> Iterator[Tensor]:
    yield from model.parameters()
    yield from model.buffers()


def _version(t: Tensor) -> int:
    """How many in-place changes ``t`` has had (-1 for an inference tensor, which keeps no count and
    cannot be changed in place outside inference mode)."""
    return -1 if t.is_inference() else t._version


# Keyed on the source model itself, held weakly: an entry goes with its model (never outlives it, and a
# new model that happens to reuse a freed model's address never finds the old copy).
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str], _Copy]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def quantized_copy(loaded: Any, scheme: Scheme, *, path: Path = "auto") -> Any:
    """A catalogue ``LoadedModel`` (or a subclass such as ``SmolLM2``) whose ``model`` is ``quantize(...)``'s
    copy; cached per loaded model, scheme and path. The float32 model is not changed.

    The cache holds the source model weakly: a copy is dropped when its source is freed or
    ``release_quantized(source)`` is called (``catalog.unload`` does), and made again when any of the
    source's parameters or buffers was replaced or changed in place since (``Tensor._version``).
    """
    source = loaded.model
    with _LOCK:
        copies = _CACHE.setdefault(source, {})
        cached = copies.get((scheme, path))
        if cached is None or not cached.fits(source):
            state = [(weakref.ref(t), _version(t)) for t in _tensors(source)]
            cached = copies[(scheme, path)] = _Copy(state, quantize(source, scheme, path=path))
        wrapped = cached.wrapped() if cached.wrapped is not None else None
        if wrapped is None or type(wrapped) is not type(loaded) or any(
            getattr(wrapped, f.name) is not getattr(loaded, f.name) for f in dataclasses.fields(loaded) if f.name != "model"
        ):
            wrapped = dataclasses.replace(loaded, model=cached.model)
            cached.wrapped = weakref.ref(wrapped)
        return wrapped


def release_quantized(source: nn.Module) -> bool:
    """Drop every cached quantized copy of ``source``; whether there was one."""
    with _LOCK:
        return bool(_CACHE.pop(source, None))


def cached_quantized_copies() -> int:
    """How many quantized copies the cache holds now (all sources, schemes and paths)."""
    with _LOCK:
        return sum(len(copies) for copies in _CACHE.values())


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one batch-1 decoding step reads: every parameter and quantized buffer once, but one
    row of an embedding table that is only looked up (not also a float output layer)."""
    lookup_only = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    lookup_only -= {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    total = 0
    for p in model.parameters():
        total += (p[0].numel() * p.element_size()) if id(p) in lookup_only else p.numel() * p.element_size()
    for m in model.modules():
        if isinstance(m, QuantizedLinear):
            total += sum(b.numel() * b.element_size() for b in m.buffers(recurse=False))
    return total
