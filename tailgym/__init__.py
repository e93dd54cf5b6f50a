"""tailgym: tail-latency research for LLM-serving schedulers.

``tailgym.simulate(workload, policy, ...)`` replays a workload through a numba simulator of a
vLLM-style engine and returns a ``Report``; see the README for the CLI. Importing tailgym
registers its gymnasium environments (``gymnasium.make("tailgym:tailgym/ServeGamma-v0")``).
"""
__version__ = "0.1.0"

from . import hardware  # noqa: E402
from .envs.registration import register_envs  # noqa: E402
from .metrics import Report  # noqa: E402
from .sim import simulate  # noqa: E402
from .workload import Workload, load_workload  # noqa: E402

register_envs()

__all__ = ["Report", "Workload", "hardware", "load_workload", "register_envs", "simulate"]
