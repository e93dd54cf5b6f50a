"""Policies by name: which numba priority function, which victim rule, which knobs."""
from dataclasses import dataclass, field

import numpy as np

from ..engine.layout import V_LAST
from . import dispatch, fcfs


@dataclass(frozen=True)
class PolicySpec:
    """A scheduling policy as the engine sees it.

    ``params`` are the knobs with their defaults, in the order the numba function reads them
    from its ``params`` array. ``signals`` documents what the policy reads; only policies with
    ``reads_output_length`` may look at the true output length.
    """

    name: str
    pid: int
    victim: int
    doc: str
    signals: tuple[str, ...]
    reads_output_length: bool = False
    reprioritize: bool = False
    params: dict[str, float] = field(default_factory=dict)

    def param_array(self, args: dict | None = None) -> np.ndarray:
        """The knob values in engine order; unknown knobs are an error, never ignored."""
        args = dict(args or {})
        unknown = sorted(set(args) - set(self.params))
        if unknown:
            valid = ", ".join(self.params) or "none"
            raise ValueError(f"policy {self.name!r} has no knob {unknown[0]!r} (knobs: {valid})")
        values = [float(args.get(k, v)) for k, v in self.params.items()]
        return np.array(values, dtype=np.float64) if values else np.zeros(1)


POLICIES: dict[str, PolicySpec] = {
    "fcfs": PolicySpec("fcfs", dispatch.FCFS, V_LAST, fcfs.__doc__, signals=("arrival",)),
}


def get_policy(name: str) -> PolicySpec:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}") from None
