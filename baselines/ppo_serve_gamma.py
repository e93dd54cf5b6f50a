"""PPO (SB3) on ``tailgym/ServeGamma-v0``: every 2 s of simulated time the agent sets
UniBoost's gamma (log scale, 1e-3..1e3 per s); the engine runs UniBoost in between.

    python -m baselines.ppo_serve_gamma [--timesteps 12000] [--n-envs 2] [--seed 0]
        [--env-kwargs '{"tune": "gamma,k,delta"}'] [--out baselines/checkpoints/ppo_serve_gamma.zip]

Training workload and engine: ``baselines/common.py``. Reward: minus request-seconds in the
system over the interval (x 0.01).
"""
from stable_baselines3 import PPO

from baselines.common import train

ENV_ID = "tailgym/ServeGamma-v0"
HYPERPARAMS = {"n_steps": 256, "batch_size": 64, "n_epochs": 10, "learning_rate": 3e-4,
               "gamma": 0.98, "gae_lambda": 0.95, "ent_coef": 0.0,
               "policy_kwargs": {"net_arch": [64, 64]}}


def main(argv=None):
    return train(PPO, ENV_ID, "ppo_serve_gamma", __doc__, HYPERPARAMS, 12_000, argv)


if __name__ == "__main__":
    main()
