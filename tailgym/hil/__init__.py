"""Hardware in the loop: a real PyTorch engine that runs the batches tailgym schedules.

``model`` (random-weight Llama and model shapes), ``kv_cache`` (paged KV pool with host
swap), ``executor`` (one timed engine step), ``profiler`` (batch-shape sweeps to a profile
CSV), ``driver`` (the scheduler loop). Names are imported on first use, so ``tailgym hil
--help`` works without torch.
"""
from importlib import import_module

_EXPORTS = {
    "tiny_model": "model", "model_spec": "model", "Llama": "model",
    "PagedKVCache": "kv_cache", "HILExecutor": "executor", "token_ids": "executor",
    "default_shapes": "profiler", "profile": "profiler", "write_profile_csv": "profiler",
    "run_hil": "driver", "HILEngine": "driver",
}
__all__ = ["HILEngine", "HILExecutor", "Llama", "PagedKVCache", "default_shapes", "model_spec", "profile", "run_hil",
           "tiny_model", "token_ids", "write_profile_csv"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
