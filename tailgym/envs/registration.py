"""Gymnasium ids of the tailgym environments.

Importing this module registers them, so these work in a fresh process (and in
``AsyncVectorEnv`` or SB3 ``SubprocVecEnv`` workers) without any other import::

    gymnasium.make("tailgym.envs.registration:tailgym/ServeGamma-v0")
    gymnasium.make("tailgym:tailgym/ServeGamma-v0")  # once ``tailgym`` calls register_envs()
"""
import gymnasium

ENVS = {"tailgym/Serve-v0": "tailgym.envs.serve:ServeEnv",
        "tailgym/ServeGamma-v0": "tailgym.envs.serve_gamma:ServeGammaEnv",
        "tailgym/ServePriority-v0": "tailgym.envs.serve_priority:ServePriorityEnv",
        "tailgym/ServeRoute-v0": "tailgym.envs.serve_route:ServeRouteEnv",
        "tailgym/ServeHIL-v0": "tailgym.envs.serve_hil:ServeHILEnv"}
NONDETERMINISTIC = {"tailgym/ServeHIL-v0"}  # measured step times


def register_envs() -> None:
    """Register every tailgym environment id with gymnasium; repeated calls do nothing."""
    for env_id, entry_point in ENVS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point,
                               nondeterministic=env_id in NONDETERMINISTIC)


register_envs()
