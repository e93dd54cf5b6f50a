"""Scheduling policies: each a numba priority function plus engine settings, by name."""
from .registry import POLICIES, EngineSettings, PolicySpec, get_policy, resolve

__all__ = ["POLICIES", "EngineSettings", "PolicySpec", "get_policy", "resolve"]
