"""Requests the engine must refuse before a run: too long for the model, or never fitting
its KV cache."""
import numpy as np

from .engine import EngineConfig
from .workload import Workload, WorkloadError


def admission_check(workload: Workload, config: EngineConfig, on_unfit: str = "error"):
    """Requests the engine must refuse, with reasons. Longer than ``max_model_len``: rejected
    (as vLLM's API server does). Never fitting the KV cache: an error naming the row, or
    rejected with ``on_unfit='reject'``."""
    if on_unfit not in ("error", "reject"):
        raise ValueError(f"on_unfit must be 'error' or 'reject', got {on_unfit!r}")
    total = workload.prompt_tokens + workload.output_tokens
    too_long = total > config.max_model_len
    usable = config.num_gpu_blocks - 1  # the watermark applies only while others run
    unfit = ~too_long & (config.blocks_for_request(workload.prompt_tokens,
                                                   workload.output_tokens) > usable)
    rows = workload.source_rows
    if unfit.any() and on_unfit == "error":
        i = int(np.flatnonzero(unfit)[0])
        where = f"{workload.name}, row {rows[i]}" if rows is not None else f"{workload.name}, request {i}"
        raise WorkloadError(
            f"{where}: prompt_tokens={workload.prompt_tokens[i]} + output_tokens="
            f"{workload.output_tokens[i]} can never fit the KV cache ({usable} usable blocks of "
            f"{config.block_size} tokens); {int(unfit.sum())} such requests in all. Raise "
            f"kv_blocks or pass on_unfit='reject' to list them as rejected.")
    rejected = []
    for i in np.flatnonzero(too_long | unfit):
        reason = (f"prompt+output tokens ({total[i]}) exceed max_model_len ({config.max_model_len})"
                  if too_long[i] else
                  f"prompt+output tokens ({total[i]}) can never fit the KV cache ({usable} blocks)")
        rejected.append({"index": int(i), "row": int(rows[i]) if rows is not None else None,
                         "reason": reason})
    return too_long | unfit, rejected
