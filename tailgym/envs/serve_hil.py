"""``tailgym/ServeHIL-v0``: ``tailgym/Serve-v0`` on the real engine (hardware in the loop).

Same spaces, decisions, rewards and ``heuristic_action()`` as ``Serve-v0``; each formed batch
runs on ``tailgym.hil`` (a random-weight Llama decoder over a paged KV pool, on ``device``)
and the clock advances by its measured time (CUDA events on a GPU, wall clock on the CPU),
so episodes are not reproducible to the bit (registered ``nondeterministic=True``).
``model`` is a model name or ``"tiny"`` (``tailgym.hil.model_spec``, overrides allowed);
``gpu`` only names the GPU of the step-time model the policy uses for its work units;
``weight_seed`` seeds the random weights. Other kwargs as ``Serve-v0``.
Needs the ``[hil]`` extra (torch).
"""
from ..engine.decisions import ADV_DECISION
from ..hil.driver import HILEngine
from ..hil.model import model_spec
from .serve import ServeEnv


class ServeHILEnv(ServeEnv):
    """Decision-event serving on the real engine (see the module docstring)."""

    _timed = 0

    def __init__(self, workload: str = "default:n=200", model: str = "tiny",
                 device: str = "cpu", dtype: str | None = None, kv_blocks: int = 512,
                 weight_seed: int = 0, **kwargs):
        self.device, self.dtype, self.weight_seed = device, dtype, int(weight_seed)
        self._spec_model = model_spec(model)
        super().__init__(workload=workload, model=self._spec_model, kv_blocks=kv_blocks,
                         **kwargs)
        self._engine = None

    def _new_episode(self, seed: int | None) -> dict:
        info = super()._new_episode(seed)
        if self._engine is not None:
            self._engine.new_episode(self._state.n_requests)
        return info

    def _advance(self, action: int) -> None:
        super()._advance(action)
        if self._status != ADV_DECISION and self._engine is not None:
            self._engine.release(self._state)  # the last finished requests' blocks

    def _execute_batch(self) -> float:
        if self._engine is None:  # built on first use: the weights take memory and time
            import torch
            dtype = getattr(torch, self.dtype) if self.dtype else None
            self._engine = HILEngine(self._spec_model, self._config, self._state.n_requests,
                                     device=self.device, dtype=dtype, seed=self.weight_seed)
        return self._engine.execute(self._state)

    def _config_info(self) -> dict:
        return {**super()._config_info(), "device": self.device, "hil_model": self.model}
