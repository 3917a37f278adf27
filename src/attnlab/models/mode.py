"""The one rule for a model's train/eval state when a tool runs it.

Dropout is on in training mode, so a tool that ran a model in the state a user left it in would
measure noise (a patch of a prompt with itself would show an "effect"). Every tool that reads a
model (``attnlab.interpret``, ``attnlab.show``, ``attnlab.generate``, the experiments' evaluations)
therefore runs it in eval mode and gives it back in the mode it found it: every submodule's own
``training`` flag is restored, so a model whose parts were in different modes stays so.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from torch import nn

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode; afterwards (also when the block raises) every
    submodule's ``training`` flag is what it was before. Yields ``model``.

    The modes are put back flag by flag (not with ``model.train(mode)``, which would set every
    submodule alike); ``model.eval()`` is called as usual, so a model that overrides ``train``
    (a quantized model refuses training mode) keeps its rule.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def evaluates(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator for a function whose first argument is the model: the call runs inside ``eval_mode``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        model = args[0] if args else kwargs["model"]
        with eval_mode(model):  # type: ignore[arg-type]
            return fn(*args, **kwargs)

    return wrapper
