"""Gymnasium environments on the tailgym engine (ids in ``registration.ENVS``)."""
from .registration import ENVS, register_envs
from .serve_gamma import ServeGammaEnv

__all__ = ["ENVS", "ServeGammaEnv", "register_envs"]
