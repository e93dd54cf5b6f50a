"""PPO (SB3) on ``tailgym/ServePriority-v0``: every 1 s of simulated time the agent scores
the 16 oldest requests in the system; the engine's preemptive scheduler serves them in
score order (unscored, younger requests after them, oldest first).

    python -m baselines.ppo_serve_priority [--timesteps 30000] [--n-envs 2] [--seed 0]
        [--env-kwargs '{"guard_k": 64}'] [--out baselines/checkpoints/ppo_serve_priority.zip]

Training workload and engine: ``baselines/common.py``. Reward: minus request-seconds in the
system over the interval (x 0.02).
"""
from stable_baselines3 import PPO

from baselines.common import train

ENV_ID = "tailgym/ServePriority-v0"
HYPERPARAMS = {"n_steps": 512, "batch_size": 128, "n_epochs": 10, "learning_rate": 3e-4,
               "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.0,
               "policy_kwargs": {"net_arch": [64, 64], "log_std_init": -0.5}}


def main(argv=None):
    return train(PPO, ENV_ID, "ppo_serve_priority", __doc__, HYPERPARAMS, 30_000, argv)


if __name__ == "__main__":
    main()
