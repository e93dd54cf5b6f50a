"""Scheduling policies: each a numba priority function plus a victim rule, selected by name."""
from .registry import POLICIES, PolicySpec, get_policy

__all__ = ["POLICIES", "PolicySpec", "get_policy"]
