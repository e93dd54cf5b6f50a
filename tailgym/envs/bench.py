"""Env steps per second of the tailgym environments: ``python -m tailgym.envs.bench``.

Random agents (masked for ``Serve-v0``), resets included, after a JIT warm-up; single envs
and a ``gymnasium`` sync vector of 4. Targets: ``Serve-v0`` >= 20k steps/s single-env,
``ServeGamma-v0`` >= 2k steps/s.
"""
import time

import gymnasium
import numpy as np

from . import registration  # noqa: F401  (registers the ids)

WORKLOAD = "default:n=2000"
CASES = (  # id, kwargs, target steps/s
    ("tailgym/Serve-v0", {}, 20_000),
    ("tailgym/ServeGamma-v0", {"interval_s": 5.0}, 2_000),
    ("tailgym/ServeGamma-v0", {"interval_s": 1.0}, 2_000),
    ("tailgym/ServePriority-v0", {"interval_s": 1.0}, None),
)


def _policy(env_id: str, space, rng):
    """A random agent: a legal slot for Serve-v0 (from the int8 masks), else uniform in the
    Box (drawn directly: ``Box.sample`` costs more than some env steps)."""
    if env_id != "tailgym/Serve-v0":
        return lambda info: rng.uniform(space.low, space.high).astype(np.float32)

    def act(info):
        masks = info["action_mask"]
        if masks.ndim == 1:
            return rng.choice(np.flatnonzero(masks))
        return np.array([rng.choice(np.flatnonzero(m)) for m in masks])
    return act


def bench_env(env_id: str, kwargs: dict, num_envs: int = 1, seconds: float = 2.0,
              seed: int = 0) -> float:
    """Env steps per second (summed over the ``num_envs`` sub-envs of a sync vector)."""
    kwargs = {"workload": WORKLOAD, **kwargs}
    if num_envs == 1:
        env = gymnasium.make(env_id, **kwargs).unwrapped  # no checker wrappers in the loop
        space = env.action_space
    else:
        env = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                                 **kwargs)
        space = env.action_space
    act = _policy(env_id, space, np.random.default_rng(seed))
    _, info = env.reset(seed=seed)
    for _ in range(10):  # warm-up
        _, _, terminated, truncated, info = env.step(act(info))
        if num_envs == 1 and (terminated or truncated):
            _, info = env.reset()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, info = env.step(act(info))
        steps += num_envs
        if num_envs == 1 and (terminated or truncated):
            _, info = env.reset()
    env.close()
    return steps / (time.perf_counter() - start)


def main(seconds: float = 2.0) -> dict:
    """Print and return the figures: {(id, kwargs text, num_envs): steps/s}."""
    out = {}
    for env_id, kwargs, target in CASES:
        for num_envs in (1, 4):
            rate = bench_env(env_id, kwargs, num_envs, seconds)
            label = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"
            out[env_id, label, num_envs] = rate
            goal = ""
            if target and num_envs == 1:
                goal = f" (target >= {target:,}: {'met' if rate >= target else 'MISSED'})"
            print(f"  {env_id} [{label}] x{num_envs}: {rate:,.0f} env steps/s{goal}")
    return out


if __name__ == "__main__":
    main()
