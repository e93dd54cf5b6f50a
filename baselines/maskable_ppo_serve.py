"""MaskablePPO (sb3-contrib) on ``tailgym/Serve-v0``: the agent makes the vLLM scheduler's
decisions one at a time (which queued request to admit next or the no-op that runs the
step; which running request to preempt), with illegal actions masked.

    python -m baselines.maskable_ppo_serve [--timesteps 150000] [--n-envs 2] [--vec-env dummy]
        [--seed 0] [--env-kwargs '{"slots": 16}'] [--out baselines/checkpoints/maskable_ppo_serve.zip]

Training workload and engine: ``baselines/common.py``. Reward: minus request-seconds in the
system (x 0.01), so the return is minus the total TTLT (x 0.01). Undiscounted (gamma 1): one
step is one decision, not a unit of time, so any discount would reward an agent for making
more decisions (e.g. admitting fewer requests per engine step) to push costs further out;
a first run with gamma 0.995 drifted that way (episodes grew from ~800 to ~4500 decisions
without a better return).
"""
from sb3_contrib import MaskablePPO

from baselines.common import train

ENV_ID = "tailgym/Serve-v0"
HYPERPARAMS = {"n_steps": 1024, "batch_size": 256, "n_epochs": 4, "learning_rate": 3e-4,
               "gamma": 1.0, "gae_lambda": 0.95, "ent_coef": 0.001,
               "policy_kwargs": {"net_arch": [64, 64]}}


def main(argv=None):
    return train(MaskablePPO, ENV_ID, "maskable_ppo_serve", __doc__, HYPERPARAMS, 150_000, argv, vec_env="dummy")


if __name__ == "__main__":
    main()
