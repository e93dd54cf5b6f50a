"""Sweep batch shapes on the executor and write the timings as a tailgym profile CSV.

A shape is one step's batch: a list of (computed, n_new) per request; ``n_new == 1`` is a
decode at context ``computed``, larger ``n_new`` a prefill chunk after ``computed`` tokens.
``tailgym calibrate FILE --format tailgym`` fits the CSV to a step-time profile.
"""
from __future__ import annotations

import numpy as np

from ..calibrate.readers import write_tailgym_csv
from ..hardware import FEATURES, step_features
from .executor import HILExecutor
from .kv_cache import PagedKVCache


def _ladder(lo: int, hi: int, ratio: int) -> list[int]:
    """lo, lo*ratio, ... up to hi, and hi itself."""
    out = [lo]
    while out[-1] * ratio < hi:
        out.append(out[-1] * ratio)
    return out + [hi] if out[-1] < hi else out


def default_shapes(max_tokens: int = 256, max_batch: int = 16, max_context: int = 512) -> list:
    """Prefill-only steps (chunks of 16..``max_tokens`` tokens over 1 or 4 requests, after 0
    to ``max_context`` computed tokens), decode-only steps (1..``max_batch`` requests at
    contexts 16..``max_context``), decode batches of mixed contexts, and mixed steps (a chunk
    plus decodes). The defaults take
    seconds on a CPU with the tiny model; raise them for a GPU."""
    contexts = [0, *_ladder(16, max_context, 4)]
    shapes = [[(c, n // r)] * r for n in _ladder(16, max_tokens, 2) for r in (1, 4) if n // r >= 16
              for c in contexts]
    shapes += [[(c, 1)] * b for b in _ladder(1, max_batch, 2) for c in contexts[1:]]
    shapes += [[(c, n), *[(c, 1)] * b] for n in _ladder(16, max_tokens, 4)
               for b in _ladder(1, max_batch, 4) for c in contexts[1:]]
    shapes += [mixed_contexts(b, max_context) for b in _ladder(2, max_batch, 2)]
    return shapes


def mixed_contexts(batch: int, max_context: int) -> list:
    """A decode batch whose contexts spread geometrically from 16 to ``max_context``, as in a
    real replay (the executor then attends in several padded groups)."""
    return [(int(c), 1) for c in np.geomspace(16, max_context, batch)]


def features(shape) -> np.ndarray:
    """The step-time features of ``shape`` (:func:`tailgym.hardware.step_features`)."""
    computed, new = np.array(shape, dtype=np.float64).reshape(-1, 2).T
    return step_features(computed, new, new == 1)


def profile(executor: HILExecutor, cache: PagedKVCache, shapes=None, repeats: int = 3,
            warmup: int = 1) -> np.ndarray:
    """Time each shape ``warmup + repeats`` times; rows [repeats * shapes, len(FEATURES) + 1]:
    the features, then the step time in ms of each timed repeat. Each request gets its own blocks; shapes
    that do not fit in ``cache`` are skipped."""
    rows = []
    for shape in default_shapes() if shapes is None else shapes:
        sizes = [-(-(c + n) // cache.block_size) for c, n in shape]
        if sum(sizes) > cache.num_blocks:
            continue
        first = np.cumsum([0, *sizes])
        reqs = [(i, c, n, list(range(first[i], first[i + 1]))) for i, (c, n) in enumerate(shape)]
        x = features(shape)
        for k in range(warmup + repeats):
            seconds = executor.step(reqs)
            if k >= warmup:
                rows.append([*x, seconds * 1e3])
    return np.array(rows).reshape(-1, len(FEATURES) + 1)


def write_profile_csv(path, rows: np.ndarray, *, model: str, gpu: str, tp: int = 1, append: bool = False):
    """Write :func:`profile` rows as a tailgym profile CSV; returns the path."""
    rows = np.asarray(rows)
    return write_tailgym_csv(path, rows[:, :-1], rows[:, -1], model=model, gpu=gpu, tp=tp, append=append)
