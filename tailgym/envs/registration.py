"""Gymnasium ids of the tailgym environments.

Importing this module registers them, so these work in a fresh process (and in
``AsyncVectorEnv`` or SB3 ``SubprocVecEnv`` workers) without any other import::

    gymnasium.make("tailgym.envs.registration:tailgym/ServeGamma-v0")
    gymnasium.make("tailgym:tailgym/ServeGamma-v0")  # once ``tailgym`` calls register_envs()
"""
import gymnasium

ENVS = {"tailgym/ServeGamma-v0": "tailgym.envs.serve_gamma:ServeGammaEnv"}


def register_envs() -> None:
    """Register every tailgym environment id with gymnasium; repeated calls do nothing."""
    for env_id, entry_point in ENVS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)


register_envs()
