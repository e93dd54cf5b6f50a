"""Steps per second of ``tailgym/ServeGamma-v0``: ``python -m tailgym.envs.bench``."""
import time

from .serve_gamma import ServeGammaEnv


def bench_serve_gamma(workload: str = "default:n=2000", intervals=(5.0, 1.0, 0.5),
                      seconds: float = 2.0, seed: int = 0) -> dict[float, float]:
    """Print and return env steps/s for each decision interval (random actions, resets
    included, after a JIT warm-up). Engine time grows with the interval; the rest is fixed."""
    rates = {}
    for interval_s in intervals:
        env = ServeGammaEnv(workload=workload, interval_s=interval_s)
        env.action_space.seed(seed)
        env.reset(seed=seed)
        env.step(env.action_space.sample())
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
            if terminated or truncated:
                env.reset()
        rates[interval_s] = steps / (time.perf_counter() - start)
        print(f"{workload}, interval {interval_s:g} s: {rates[interval_s]:,.0f} env steps/s")
    return rates


if __name__ == "__main__":
    bench_serve_gamma()
