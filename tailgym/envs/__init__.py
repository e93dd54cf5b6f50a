"""Gymnasium environments on the tailgym engine (ids in ``registration.ENVS``)."""
from .registration import ENVS, register_envs
from .serve import ServeEnv
from .serve_gamma import ServeGammaEnv
from .serve_priority import ServePriorityEnv
from .serve_route import ServeRouteEnv

__all__ = ["ENVS", "ServeEnv", "ServeGammaEnv", "ServePriorityEnv", "ServeRouteEnv",
           "register_envs"]
