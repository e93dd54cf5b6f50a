"""Prefix keys of each request's KV blocks (placeholder until prefix content lands)."""
import numpy as np


def engine_block_keys(workload, block_size: int):
    """``(offsets, keys)``: no request describes its prefix content yet."""
    return np.zeros(len(workload) + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
