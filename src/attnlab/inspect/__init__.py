"""Looking inside: named hook points on every activation and ``run_with_cache``."""

from attnlab.inspect.cache import (
    ActivationCache,
    HookNotFiredError,
    hook_name,
    hook_points,
    hooks_attached,
    main_stack,
    math_backend,
    run_with_cache,
    stacks,
)

__all__ = [
    "ActivationCache",
    "HookNotFiredError",
    "hook_name",
    "hook_points",
    "hooks_attached",
    "main_stack",
    "math_backend",
    "run_with_cache",
    "stacks",
]
