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
from attnlab.inspect.steps import AttentionSteps, attention_steps

__all__ = [
    "ActivationCache",
    "AttentionSteps",
    "HookNotFiredError",
    "attention_steps",
    "hook_name",
    "hook_points",
    "hooks_attached",
    "main_stack",
    "math_backend",
    "run_with_cache",
    "stacks",
]
