"""Model shapes, GPU specs, KV-cache capacity and the step-time model.

Step-time model
---------------
Each engine step is summarised by a float64 feature vector ``x`` of length 8
(:data:`FEATURES`, computed by :func:`step_features`; the numba engine's
``tailgym.engine.cost.batch_features`` is the same function):

* ``const`` = 1;
* ``prefill_tokens``: tokens in prefill chunks this step;
* ``decode_seqs``: requests decoding one token this step;
* ``context_tokens``: sum over scheduled requests of (tokens already in the KV
  cache + new tokens), i.e. the KV that attention reads;
* ``prefill_attention``: sum over prefill chunks of ``n * (c + n / 2)`` with
  ``c`` tokens already computed and ``n`` the chunk size (causal query-key pairs);
* ``prefill_seqs``: number of prefill chunks (requests prefilling this step);
* ``knee_tokens``: scheduled tokens ``s = prefill_tokens + decode_seqs`` beyond
  :data:`STEP_KNEE_TOKENS`, ``max(0, s - 2048)``;
* ``large_step_tokens``: ``min(s, 2 * knee_tokens)``: 0 up to 2048 scheduled
  tokens, every token of the step from 4096 on, linear in between.

The step takes ``max(compute @ x, memory @ x)`` seconds. The two coefficient
vectors are a roofline (GEMM/attention FLOPs vs. weight and KV bytes); a purely
linear profile puts its coefficients in ``compute`` and zeros in ``memory``.

Why these features (measured on the splitwise ``perf_model.csv`` grid; medians of
5 repeats, prefill microseconds per prompt token; prompt 1024/4096 and batch 4/16
are grid points of the public file that the shared copy lacks, so no fit sees them)::

    llama2-70b h100 TP8   one prompt of P=  512 1024 2048 4096 8192
                                            105   76   67   95  103
                          B prompts of 512: B=1    2    4    8   16   32   64
                                            105   75   65   91   99   95   90
    llama2-70b a100 TP4   one prompt of P=  248  222  197  236  278
                          B prompts of 512: 248  248  279  301  353  313  334

1. At equal total tokens a batch of prompts costs more than one long prompt on
   A100 (TP4: 1.12-1.42x at 1024-8192 tokens) although its attention is
   smaller; on H100 both cost the same. Small prefill steps cost well above a
   decode step (a 128-token prompt 58 ms, a 1-token decode 30 ms, h100 TP8).
   Hence ``prefill_seqs``: the A100 llama2 fits charge 15-32 ms per prefill
   sequence in the compute regime (H100: 0), all fits 12-37 ms in the memory
   regime.
2. Per-token cost falls up to 2048 tokens in a step and is 1.1-1.4x higher from
   4096 tokens on (TP4, TP8, bloom; 1.03-1.08x at TP2), for one long prompt and
   for batches alike: it depends on the step's token count, not on the prompts.
   The knee takes two shapes because the grid has no point between 2048 and
   4096: ``knee_tokens`` (only the tokens past 2048 cost more; what the A100
   fits use) and ``large_step_tokens`` (the whole step costs more; the H100 fits).

Worst splitwise profile, prefill MAPE leave-one-out / on the held-out points: all
eight features 9.3% / 9.0%; without both knee features 20.7% / 20.8%; without
``prefill_seqs`` 11.3% / 18.1%; without ``large_step_tokens`` 11.7% / 8.1%;
without ``knee_tokens`` 8.9% / 11.3% (decode: 5.5% / 3.2% in every case).
``calibrate.fit`` also ties the compute regime's attention coefficient to its
token coefficient by the model's FLOP ratio when the model is known: only two
long single prompts would constrain it.

The roofline (:func:`roofline`) gives ``prefill_seqs``, ``knee_tokens`` and
``large_step_tokens`` coefficient 0: FLOP and byte counts have no per-sequence
cost and no step-size threshold.

Profile JSON (``tailgym-profile/2``), units are seconds per feature unit::

    {"format": "tailgym-profile/2", "name": "splitwise-llama2-70b-h100-80gb-tp2",
     "model": "llama2-70b", "gpu": "h100-80gb", "tp": 2,
     "features": ["const", "prefill_tokens", ...],
     "compute": [one float per feature], "memory": [one float per feature],
     "source": "how it was made", "fit": {optional quality report}}

``features`` lists any of :data:`FEATURES` in any order; a feature it does not list
has coefficient 0. ``tailgym-profile/1`` files (exactly the first five features)
load unchanged and give the same step times. ``name`` is optional (defaults to
the file stem). Shipped profiles live in ``tailgym/profiles/`` and load by name
with :func:`load_profile`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

FEATURES = ("const", "prefill_tokens", "decode_seqs", "context_tokens", "prefill_attention",
            "prefill_seqs", "knee_tokens", "large_step_tokens")
FEATURES_V1 = FEATURES[:5]
PROFILE_FORMAT = "tailgym-profile/2"
PROFILE_FORMAT_V1 = "tailgym-profile/1"
STEP_KNEE_TOKENS = 2048
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
GiB = 1 << 30
MiB = 1 << 20

# Roofline constants (one place). MFU: dense GEMMs reach 60-70% of peak on
# H100 in vidur's per-operator data; 0.5 leaves room for norms, rope,
# activations and attention kernels. BW_EFF: achievable fraction of HBM
# bandwidth for weight/KV streaming. STEP_OVERHEAD_S: per-step CPU/launch
# cost (scheduling, input prep, sampling) not hidden behind the GPU.
ROOFLINE_MFU = 0.5
ROOFLINE_BW_EFF = 0.8
STEP_OVERHEAD_S = 3e-3

# KV capacity: fixed reserve for the CUDA context, cuBLAS/NCCL workspaces and
# CUDA graphs; activations are estimated per batched token on top of it.
ACTIVATION_BASE_BYTES = 1 * GiB


@dataclass(frozen=True)
class ModelSpec:
    """Transformer shape (public HF config) of a dense decoder-only model."""

    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    n_params: int
    dtype_bytes: int = 2
    max_context: int = 4096

    @property
    def weight_bytes(self) -> int:
        return self.n_params * self.dtype_bytes

    @property
    def flops_per_token(self) -> int:
        """GEMM FLOPs of one token (all GPUs)."""
        return 2 * self.n_params

    @property
    def attention_flops_per_pair(self) -> int:
        """Attention FLOPs (QK^T and PV) of one query-key pair (all GPUs)."""
        return 4 * self.n_layers * self.n_heads * self.head_dim


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("llama3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8_030_261_248, max_context=131072),
        ModelSpec("llama2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 6_738_415_616, max_context=4096),
        ModelSpec("llama2-70b", 80, 8192, 64, 8, 128, 28672, 32000, 68_976_648_192, max_context=4096),
        ModelSpec("codellama-34b", 48, 8192, 64, 8, 128, 22016, 32000, 33_743_970_304, max_context=16384),
        # Qwen-72B (v1): config intermediate_size 49152 is halved in the MLP code.
        ModelSpec("qwen-72b", 80, 8192, 64, 64, 128, 24576, 152064, 72_287_920_128, max_context=32768),
        ModelSpec("bloom-176b", 70, 14336, 112, 112, 128, 57344, 250880, 176_247_271_424, max_context=2048),
    )
}


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator. Bandwidths in bytes/s; memory as reported by nvidia-smi.

    ``host_link_bw`` is the per-direction GPU-host link (PCIe) used for KV swap;
    ``nvlink_bw`` the aggregate bidirectional NVLink bandwidth.
    """

    name: str
    memory_bytes: int
    hbm_bw: float
    peak_bf16_flops: float
    host_link_bw: float
    nvlink_bw: float | None = None


_H100 = GPUSpec("h100-80gb", 81559 * MiB, 3.35e12, 989e12, 64e9, 900e9)
GPUS: dict[str, GPUSpec] = {
    g.name: g
    for g in (
        GPUSpec("a100-80gb", 81920 * MiB, 2.039e12, 312e12, 32e9, 600e9),
        _H100,
        # Power-capped H100 (splitwise data): same datasheet numbers; the lower
        # sustained compute shows up only in its fitted profiles.
        replace(_H100, name="h100-80gb-pcap"),
        GPUSpec("h200", 143771 * MiB, 4.8e12, 989e12, 64e9, 900e9),
    )
}


def _lookup(table: dict, kind: str, name):
    if not isinstance(name, str):
        return name
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(table))}") from None


def get_model(name: str | ModelSpec) -> ModelSpec:
    """The :class:`ModelSpec` called ``name`` (a spec passes through)."""
    return _lookup(MODELS, "model", name)


def get_gpu(name: str | GPUSpec) -> GPUSpec:
    """The :class:`GPUSpec` called ``name`` (a spec passes through)."""
    return _lookup(GPUS, "gpu", name)


def _kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads on one TP rank; vLLM replicates KV heads when tp > n_kv_heads."""
    if not (isinstance(tp, int) and tp >= 1) or model.n_heads % tp:
        raise ValueError(f"tp={tp!r} must be a positive divisor of {model.name}'s {model.n_heads} heads")
    if model.n_kv_heads % tp and tp % model.n_kv_heads:
        raise ValueError(f"tp={tp} cannot split {model.name}'s {model.n_kv_heads} KV heads")
    return max(model.n_kv_heads // tp, 1)


def kv_bytes_per_token(model: str | ModelSpec, tp: int = 1) -> int:
    """KV-cache bytes per token on one GPU (K and V, all layers)."""
    m = get_model(model)
    return 2 * _kv_heads_per_gpu(m, tp) * m.head_dim * m.dtype_bytes * m.n_layers


def kv_block_bytes(model: str | ModelSpec, block_size: int = 16, tp: int = 1) -> int:
    """Bytes of one KV block on one GPU: 2*block_size*n_kv_heads*head_dim*dtype*n_layers/tp."""
    return block_size * kv_bytes_per_token(model, tp)


def default_engine_knobs(gpu: str | GPUSpec) -> dict:
    """vLLM v1 API-server defaults: GPUs with >= 70 GiB that are not A100 get larger batches."""
    g = get_gpu(gpu)
    big = g.memory_bytes >= 70 * GiB and "a100" not in g.name
    return {
        "max_num_batched_tokens": 8192 if big else 2048,
        "max_num_seqs": 1024 if big else 256,
        "block_size": 16,
    }


def estimate_activation_bytes(
    model: str | ModelSpec, tp: int = 1, *, max_num_batched_tokens: int = 8192, max_num_seqs: int = 1024
) -> int:
    """Estimate of non-weight, non-KV memory in vLLM's profile run (per GPU).

    ``ACTIVATION_BASE_BYTES`` plus, per batched token, the residual stream and
    attention buffers (4*hidden) and the gate/up projection (2*intermediate/tp)
    in the model dtype, plus fp32 dummy logits for ``max_num_seqs`` samples.
    """
    m = get_model(model)
    per_token = (4 * m.hidden + 2 * m.intermediate // tp) * m.dtype_bytes
    return ACTIVATION_BASE_BYTES + max_num_batched_tokens * per_token + max_num_seqs * m.vocab * 4


def kv_capacity_blocks(
    model: str | ModelSpec,
    gpu: str | GPUSpec,
    *,
    tp: int = 1,
    gpu_memory_utilization: float = 0.9,
    block_size: int = 16,
    activation_reserve_bytes: int | None = None,
) -> int:
    """KV blocks per GPU: (util*memory - weights/tp - activations) // block bytes.

    The count includes vLLM's reserved null block. The activation reserve
    defaults to :func:`estimate_activation_bytes` with the GPU's default knobs.
    """
    m, g = get_model(model), get_gpu(gpu)
    if activation_reserve_bytes is None:
        knobs = default_engine_knobs(g)
        activation_reserve_bytes = estimate_activation_bytes(
            m, tp, max_num_batched_tokens=knobs["max_num_batched_tokens"], max_num_seqs=knobs["max_num_seqs"]
        )
    budget = gpu_memory_utilization * g.memory_bytes
    weights = m.weight_bytes / tp
    if weights >= budget:
        raise ValueError(
            f"{m.name} needs {weights / GiB:.1f} GiB of weights per GPU at tp={tp}, but {g.name} offers "
            f"{budget / GiB:.1f} GiB at gpu_memory_utilization={gpu_memory_utilization}; use a larger tp"
        )
    free = budget - weights - activation_reserve_bytes
    blocks = int(free // kv_block_bytes(m, block_size, tp))
    if blocks <= 0:
        raise ValueError(
            f"{m.name} at tp={tp} on {g.name}: no memory left for the KV cache after weights "
            f"({weights / GiB:.1f} GiB) and activations ({activation_reserve_bytes / GiB:.1f} GiB)"
        )
    return blocks


def knee_features(tokens):
    """(``knee_tokens``, ``large_step_tokens``) of steps scheduling ``tokens`` tokens."""
    over = np.maximum(np.asarray(tokens, dtype=np.float64) - STEP_KNEE_TOKENS, 0.0)
    return over, np.minimum(tokens, 2 * over)


def step_features(computed, new, decode) -> np.ndarray:
    """Features (:data:`FEATURES`) of one step from per-request arrays: tokens already
    computed, new tokens this step, and whether the request decodes (else it prefills)."""
    c, n = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (computed, new))
    d = np.asarray(decode, dtype=bool).reshape(-1)
    p = ~d
    x = np.zeros(len(FEATURES))
    x[:6] = (1.0, n[p].sum(), d.sum(), (c + n).sum(), (n[p] * (c[p] + n[p] / 2)).sum(), p.sum())
    x[6:] = knee_features(x[1] + x[2])
    return x


def _coef_vector(values, what: str) -> np.ndarray:
    v = np.array(values, dtype=np.float64)
    if v.shape != (len(FEATURES),) or not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"{what} must be {len(FEATURES)} finite non-negative numbers, got {values!r}")
    v.flags.writeable = False
    return v


@dataclass(frozen=True, eq=False)
class StepTimeModel:
    """Step time = max(compute @ x, memory @ x) seconds; see the module docstring."""

    compute: np.ndarray
    memory: np.ndarray
    name: str
    source: str
    model: str
    gpu: str
    tp: int = 1
    fit: dict | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "compute", _coef_vector(self.compute, "compute"))
        object.__setattr__(self, "memory", _coef_vector(self.memory, "memory"))

    def coef(self) -> np.ndarray:
        """(2, len(FEATURES)) float64 C-contiguous [compute; memory], as the numba engine takes it."""
        return np.ascontiguousarray(np.stack([self.compute, self.memory]), dtype=np.float64)

    def predict(self, x) -> np.ndarray:
        """Step seconds for features ``x`` of shape (..., len(FEATURES))."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1:] != (len(FEATURES),):
            raise ValueError(f"features must have shape (..., {len(FEATURES)}), got {x.shape}")
        return np.maximum(x @ self.compute, x @ self.memory)

    def to_dict(self) -> dict:
        d = {
            "format": PROFILE_FORMAT,
            "name": self.name,
            "model": self.model,
            "gpu": self.gpu,
            "tp": self.tp,
            "features": list(FEATURES),
            "compute": self.compute.tolist(),
            "memory": self.memory.tolist(),
            "source": self.source,
        }
        if self.fit is not None:
            d["fit"] = self.fit
        return d

    def to_json(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def from_json(cls, path) -> StepTimeModel:
        """Load a ``tailgym-profile/2`` or ``/1`` file (features it does not list get coefficient 0)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None

        def bad(key, expected):
            return ValueError(f"{path}: key {key!r}: expected {expected}, got {d.get(key, '<missing>')!r}")

        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
        names = d.get("features")
        if d.get("format") == PROFILE_FORMAT_V1:
            if names != list(FEATURES_V1):
                raise bad("features", list(FEATURES_V1))
        elif d.get("format") == PROFILE_FORMAT:
            if not (isinstance(names, list) and len(set(map(str, names))) == len(names) > 0
                    and set(names) <= set(FEATURES)):
                raise bad("features", f"distinct names from {list(FEATURES)}")
        else:
            raise bad("format", f"{PROFILE_FORMAT!r} or {PROFILE_FORMAT_V1!r}")
        for key in ("model", "gpu", "source"):
            if not isinstance(d.get(key), str):
                raise bad(key, "a string")
        tp = d.get("tp")
        if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
            raise bad("tp", "a positive integer")
        if not isinstance(d.get("fit") or {}, dict):
            raise bad("fit", "an object")
        coefs = {}
        for key in ("compute", "memory"):
            v = d.get(key)
            if not (isinstance(v, list) and len(v) == len(names)):
                raise bad(key, f"a list of {len(names)} numbers, one per entry of 'features'")
            full = dict.fromkeys(FEATURES, 0.0) | dict(zip(names, v))
            try:
                coefs[key] = _coef_vector([full[f] for f in FEATURES], key)
            except (TypeError, ValueError):
                raise bad(key, "finite non-negative numbers") from None
        return cls(
            name=str(d.get("name", path.stem)),
            source=d["source"],
            model=d["model"],
            gpu=d["gpu"],
            tp=tp,
            fit=d.get("fit"),
            **coefs,
        )


def roofline(
    model: str | ModelSpec,
    gpu: str | GPUSpec,
    tp: int = 1,
    *,
    mfu: float = ROOFLINE_MFU,
    bw_eff: float = ROOFLINE_BW_EFF,
    overhead_s: float = STEP_OVERHEAD_S,
) -> StepTimeModel:
    """Roofline step-time model from datasheet numbers.

    compute: ``flops_per_token``/tp FLOPs per scheduled token, ``attention_flops_per_pair``/tp
    FLOPs per prefill query-key pair and per context token (decode attention),
    at ``peak * mfu``. memory: weights/tp once per step plus the KV of every
    context token, at ``hbm_bw * bw_eff``. ``overhead_s`` is added to both.
    TP communication is not modelled; ``prefill_seqs``, ``knee_tokens`` and
    ``large_step_tokens`` get 0 (no FLOPs or bytes of their own).
    """
    m, g = get_model(model), get_gpu(gpu)
    flops = g.peak_bf16_flops * mfu
    bw = g.hbm_bw * bw_eff
    token_s = m.flops_per_token / tp / flops
    attn_s = m.attention_flops_per_pair / tp / flops
    compute = [overhead_s, token_s, token_s, attn_s, attn_s, 0.0, 0.0, 0.0]
    memory = [overhead_s + m.weight_bytes / tp / bw, 0.0, 0.0, kv_bytes_per_token(m, tp) / bw, 0.0, 0.0, 0.0, 0.0]
    return StepTimeModel(
        compute=compute,
        memory=memory,
        name=f"roofline-{m.name}-{g.name}-tp{tp}",
        source=f"roofline(mfu={mfu}, bw_eff={bw_eff}, overhead_s={overhead_s})",
        model=m.name,
        gpu=g.name,
        tp=tp,
    )


def list_profiles() -> list[str]:
    """Names of the profiles shipped in ``tailgym/profiles/``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def load_profile(path_or_name) -> StepTimeModel:
    """Load a profile JSON from a path, or a shipped profile by name."""
    path = Path(path_or_name)
    if path.suffix == ".json" or path.exists():
        return StepTimeModel.from_json(path)
    shipped = PROFILES_DIR / f"{path_or_name}.json"
    if not shipped.is_file():
        raise ValueError(
            f"no profile file or shipped profile {str(path_or_name)!r}; shipped: {', '.join(list_profiles())}"
        )
    return StepTimeModel.from_json(shipped)
