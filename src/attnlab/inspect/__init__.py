"""Looking inside: named hook points on every activation and ``run_with_cache``."""

from attnlab.inspect.cache import ActivationCache, hook_points, hooks_attached, math_backend, run_with_cache

__all__ = ["ActivationCache", "hook_points", "hooks_attached", "math_backend", "run_with_cache"]
