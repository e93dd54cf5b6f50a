"""Paged KV cache: fixed-size blocks on the device and a host pool for swapped-out blocks."""
from __future__ import annotations

import torch

from ..hardware import ModelSpec


def _runs(ids: list[int]):
    """(offset in ``ids``, first id, length) of each run of consecutive ids."""
    start = 0
    for j in range(1, len(ids) + 1):
        if j == len(ids) or ids[j] != ids[j - 1] + 1:
            yield start, ids[start], j - start
            start = j


class PagedKVCache:
    """``k`` and ``v``: [n_layers, num_blocks, block_size, n_kv_heads, head_dim] on ``device``.

    ``host``: [host_blocks, 2, n_layers, block_size, n_kv_heads, head_dim] in (pinned, on
    CUDA) host memory, one contiguous slab per block, K then V. Swap copies are issued on the
    current stream without waiting for them, as a real engine does.
    """

    def __init__(self, spec: ModelSpec, num_blocks: int, block_size: int = 16, *, device="cpu",
                 dtype=torch.float32, host_blocks: int = 0):
        self.spec, self.num_blocks, self.block_size = spec, num_blocks, block_size
        self.device = torch.device(device)
        shape = (spec.n_layers, num_blocks, block_size, spec.n_kv_heads, spec.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=dtype)
        self.host = torch.zeros((host_blocks, 2, *shape[:1], *shape[2:]), dtype=dtype,
                                pin_memory=self.device.type == "cuda")

    def swap_out(self, gpu_blocks: list[int], host_blocks: list[int]) -> None:
        """Copy device blocks ``gpu_blocks[j]`` to host blocks ``host_blocks[j]``."""
        self._check(gpu_blocks, host_blocks)
        idx = torch.as_tensor(gpu_blocks, device=self.device)
        staged = torch.stack((self.k[:, idx], self.v[:, idx])).permute(2, 0, 1, 3, 4, 5).contiguous()
        for j, h, n in _runs(host_blocks):
            self.host[h:h + n].copy_(staged[j:j + n], non_blocking=True)

    def swap_in(self, host_blocks: list[int], gpu_blocks: list[int]) -> None:
        """Copy host blocks ``host_blocks[j]`` to device blocks ``gpu_blocks[j]``."""
        self._check(gpu_blocks, host_blocks)
        self.store(gpu_blocks, self.fetch(host_blocks))

    def fetch(self, host_blocks: list[int]) -> torch.Tensor:
        """Host blocks ``host_blocks`` staged on the device (for ``store``): once this is
        issued the host blocks may be written again."""
        staged = torch.empty((len(host_blocks), *self.host.shape[1:]), device=self.device,
                             dtype=self.host.dtype)
        for j, h, n in _runs(host_blocks):
            staged[j:j + n].copy_(self.host[h:h + n], non_blocking=True)
        return staged

    def store(self, gpu_blocks: list[int], staged: torch.Tensor) -> None:
        """Write blocks staged by ``fetch`` into device blocks ``gpu_blocks``."""
        if len(gpu_blocks) != len(staged):
            raise ValueError(f"{len(gpu_blocks)} device blocks but {len(staged)} staged blocks")
        idx = torch.as_tensor(gpu_blocks, device=self.device)
        self.k.index_copy_(1, idx, staged[:, 0].transpose(0, 1))
        self.v.index_copy_(1, idx, staged[:, 1].transpose(0, 1))

    def memory_bytes(self) -> int:
        """Bytes of the device K and V pools."""
        return 2 * self.k.numel() * self.k.element_size()

    def _check(self, gpu_blocks, host_blocks):
        if len(gpu_blocks) != len(host_blocks):
            raise ValueError(f"{len(gpu_blocks)} device blocks but {len(host_blocks)} host blocks")
