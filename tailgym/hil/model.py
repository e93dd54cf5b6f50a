"""Llama-architecture decoder with random weights, and the model shapes it runs.

Any :class:`~tailgym.hardware.ModelSpec` runs as a Llama (RMSNorm, RoPE, grouped-query
attention, SwiGLU MLP, untied LM head, no biases): the GEMM and KV shapes are the model's,
the weights are seeded noise. Attention is a callback so that the same weights run on the
paged KV cache (:mod:`tailgym.hil.executor`) and densely (the reference, ``attention=None``).
"""
from __future__ import annotations

from dataclasses import fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..hardware import MODELS, ModelSpec

ROPE_THETA = 10000.0
NORM_EPS = 1e-5
INIT_STD = 0.02
# model_spec's "name:key=value" overrides: the integer shape fields (n_params is derived)
OVERRIDES = {"layers": "n_layers", **{f.name: f.name for f in fields(ModelSpec)
                                      if f.type in ("int", int) and f.name != "n_params"}}


def llama_params(spec: ModelSpec) -> int:
    """Parameter count of a Llama with ``spec``'s shapes (exact for llama2/llama3)."""
    q, kv = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
    layer = spec.hidden * (2 * q + 2 * kv) + 3 * spec.hidden * spec.intermediate + 2 * spec.hidden
    return spec.n_layers * layer + 2 * spec.vocab * spec.hidden + spec.hidden


def tiny_model(name: str = "tiny") -> ModelSpec:
    """A 2-layer GQA model (8 query heads, 4 per KV head) that runs in milliseconds on a CPU."""
    spec = ModelSpec(name, n_layers=2, hidden=64, n_heads=8, n_kv_heads=2, head_dim=8,
                     intermediate=128, vocab=256, n_params=0)
    return replace(spec, n_params=llama_params(spec))


def model_spec(name: str) -> ModelSpec:
    """``"tiny"``, a name from :data:`tailgym.hardware.MODELS`, or either with integer
    overrides after a colon, e.g. ``"llama3-8b:layers=2,vocab=1024"`` (``layers`` is
    ``n_layers``; ``n_params`` is recomputed)."""
    base, _, opts = name.partition(":")
    if base == "tiny":
        spec = tiny_model()
    elif base in MODELS:
        spec = MODELS[base]
    else:
        raise ValueError(f"unknown model {base!r}; valid: tiny, {', '.join(sorted(MODELS))}")
    if not opts:
        return spec
    changes = {}
    for opt in opts.split(","):
        key, _, value = opt.partition("=")
        if key not in OVERRIDES or not value.isdigit() or int(value) < 1:
            raise ValueError(f"bad override {opt!r} in {name!r}; use KEY=positive int with KEY in "
                             f"{', '.join(sorted(OVERRIDES))}")
        changes[OVERRIDES[key]] = int(value)
    spec = replace(spec, name=name, **changes)
    return replace(spec, n_params=llama_params(spec))


def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + NORM_EPS)).to(x.dtype) * weight


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [N, heads, head_dim] by position (HF Llama's rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def dense_attention(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of one whole sequence: q [N, heads, d], k and v [N, kv_heads, d]."""
    group = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(group, dim=1).transpose(0, 1) for t in (k, v))
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k, v, is_causal=True)
    return out.transpose(0, 1).reshape(q.shape[0], -1)


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, weight):
        super().__init__()
        q, kv = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
        self.attn_norm = weight(spec.hidden, std=None)
        self.qkv = weight(q + 2 * kv, spec.hidden)
        self.o = weight(spec.hidden, q)
        self.mlp_norm = weight(spec.hidden, std=None)
        self.gate_up = weight(2 * spec.intermediate, spec.hidden)
        self.down = weight(spec.hidden, spec.intermediate)


class Llama(nn.Module):
    """Random-weight Llama; ``forward`` runs any set of tokens given their positions."""

    def __init__(self, spec: ModelSpec, *, device="cpu", dtype=torch.float32, seed: int = 0):
        super().__init__()
        self.spec = spec
        gen = torch.Generator(device=device).manual_seed(seed)

        def weight(*shape, std=INIT_STD):
            w = torch.empty(shape, device=device, dtype=dtype)
            w = w.fill_(1.0) if std is None else w.normal_(0.0, std, generator=gen)
            return nn.Parameter(w, requires_grad=False)

        self.embed = weight(spec.vocab, spec.hidden)
        self.layers = nn.ModuleList(DecoderLayer(spec, weight) for _ in range(spec.n_layers))
        self.norm = weight(spec.hidden, std=None)
        self.lm_head = weight(spec.vocab, spec.hidden)
        half = spec.head_dim // 2
        self.register_buffer("inv_freq", ROPE_THETA ** -(torch.arange(half, device=device) / half))

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, attention=None,
                select: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [len(select), vocab] of the rows ``select`` of the tokens ``ids`` [N] at
        ``positions`` [N] (all rows by default). ``attention(layer, q, k, v)`` maps q
        [N, heads, d] and k, v [N, kv_heads, d] (q and k rotated) to [N, heads * d]; by
        default the tokens are one whole sequence (:func:`dense_attention`)."""
        attention = attention or dense_attention
        spec, n = self.spec, ids.shape[0]
        freqs = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq
        cos, sin = (f(freqs).to(self.embed.dtype)[:, None, :] for f in (torch.cos, torch.sin))
        x = F.embedding(ids, self.embed)
        heads = spec.n_heads + spec.n_kv_heads
        for i, layer in enumerate(self.layers):
            qkv = F.linear(rms_norm(x, layer.attn_norm), layer.qkv).view(n, -1, spec.head_dim)
            q, k = rope(qkv[:, :heads], cos, sin).split((spec.n_heads, spec.n_kv_heads), dim=1)
            x = x + F.linear(attention(i, q, k, qkv[:, heads:]), layer.o)
            gate, up = F.linear(rms_norm(x, layer.mlp_norm), layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        if select is not None:
            x = x[select]
        return F.linear(rms_norm(x, self.norm), self.lm_head)
