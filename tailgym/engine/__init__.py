"""The numba serving engine: state layout, KV accounting, batch formation, step loop."""
from .runner import EngineError, run
from .state import EngineConfig, EngineState

__all__ = ["EngineConfig", "EngineError", "EngineState", "run"]
