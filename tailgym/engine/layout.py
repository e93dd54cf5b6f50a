"""Engine state layout: named columns of the per-request tables and the scalar arrays.

The numba engine works on plain numpy arrays so the whole state can be pickled, copied
and stepped from Python (gymnasium envs) or numba (fast path) alike:

* ``rf`` float64 ``(N, RF_COLS)`` and ``ri`` int64 ``(N, RI_COLS)``: one row per request.
* ``target`` int64 ``(N,)``: true output lengths. Only the engine reads it (to stop a request);
  policies never receive it. ``hint`` float64 ``(N,)`` is what a policy may know about output
  lengths: the truth for oracle policies, a noisy prediction or rank score for predictive ones,
  nan for prediction-free ones (built in ``tailgym.policies.registry``).
* ``pstate`` float64: the policy's online statistics (``tailgym.policies.online``).
* ``queues`` int64 ``(Q_ROWS, N)``: the waiting heap, the swapped heap, the running list,
  scratch rows and the arrival order.
* ``batches`` int64 ``(2, B_ROWS, max_num_seqs + 1)``: two batch slots (async scheduling keeps
  one in flight while the next is formed), one column per scheduled request (rows ``B_*``).
* ``s`` int64 ``(S_COLS,)`` and ``t`` float64 ``(T_COLS,)``: engine scalars (counters, clock).
* ``cfg_i`` int64 / ``cfg_f`` float64: engine configuration, read-only during a run.

Module-level integer constants are compile-time constants inside numba functions.
"""

# --- per-request float columns (rf) ---
ARRIVAL = 0        # arrival time, s
PRIO = 1           # current priority value (lower = served first)
FIRST_SCHED = 2    # start of the step that first scheduled it (nan until then)
FIRST_TOKEN = 3    # end of the step that produced its first token
LAST_TOKEN = 4     # end of the step that produced its latest token
DONE = 5           # completion time (= last token time when finished)
MAX_GAP = 6        # largest gap between consecutive tokens
SUM_GAP = 7        # sum of gaps between consecutive tokens
RF_COLS = 8

# --- per-request int columns (ri) ---
# What a decode step reads comes first, so it shares a 64-byte cache line (a fleet's replicas
# find their requests' rows cold): ``EngineState`` aligns the rows, 24 columns = 3 lines.
PROMPT = 0         # prompt tokens
CACHED_BLOCKS = 1  # prefix caching: leading blocks of its table registered in the hash map
COMPUTED = 2       # tokens whose KV is in the GPU cache
GENERATED = 3      # output tokens produced so far
BLOCKS = 4         # GPU KV blocks held
PLACEHOLDER = 5    # async: tokens scheduled to be sampled whose output has not arrived
IN_FLIGHT = 6      # tokens scheduled in batches whose output has not been processed
STALE = 7          # async: in-flight tokens of a request preempted since (output still due)
STATUS = 8         # one of the ST_* codes below (a decode step reads it only for a request
                   # holding no blocks: finished or preempted)
ROW = 9            # prefix caching: its row of the block tables (-1: holds no GPU blocks)
NEXT_PRIO = 10     # its priority cannot change before GENERATED reaches this (0: any step)
GUARD = 11         # MemGuard: not evictable before GENERATED reaches this
HOST_BLOCKS = 12   # host (swap) blocks held
N_PREEMPT = 13     # times preempted (recompute or swap)
N_SWAP = 14        # times swapped out
SWAPPED_TOKENS = 15    # tokens whose KV was swapped out (summed over swaps)
RECOMPUTED_TOKENS = 16 # tokens whose KV was dropped and must be recomputed
PRIO_CHANGES = 17      # times its priority changed after arrival
CACHED_TOKENS = 18     # prompt tokens served from the prefix cache at its first admission
HIT_TOKENS = 19        # tokens served from the prefix cache over all its admissions
MATCH_TOKENS = 20      # prefix caching: tokens the cache matched at its latest lookup (its
                       # arrival, a policy refresh while it waits, its admission)
RI_COLS = 24           # 21 used, 3 unused: whole cache lines

# --- request status codes ---
ST_FUTURE = 0      # not arrived yet
ST_WAITING = 1     # in the waiting heap (new or preempted by recompute)
ST_RUNNING = 2     # in the running list
ST_SWAPPED = 3     # KV in host memory, in the swapped heap
ST_FINISHED = 4
ST_REJECTED = 5    # refused before the run (reason kept on the Python side)

# --- queues rows ---
Q_WAITING = 0
Q_SWAPPED = 1
Q_RUNNING = 2
Q_SKIPPED = 3      # scratch: waiting requests set aside for this step (output still in flight)
Q_PREEMPTED = 4    # requests preempted while forming the current batch
Q_ARRIVALS = 5     # requests in arrival order, admitted from position s[S_NEXT_ARRIVAL] up to
                   # s[S_N_ARRIVALS]: every row for one engine (so positions are request
                   # indices, as decisions.py assumes); those routed to it in a fleet
Q_ROWS = 6

# --- batch rows ---
B_REQ = 0          # request index
B_NEW = 1          # new tokens computed this step
B_CONTEXT = 2      # tokens of the request already computed before this step
B_DECODE = 3       # 1 if this is a one-token decode of a sampled token
B_SAMPLE = 4       # 1 if the step samples a token for it (not a partial prefill chunk)
B_ROWS = 5

# --- int scalars (s) ---
S_NEXT_ARRIVAL = 0     # position of the next request to arrive in queues[Q_ARRIVALS]
S_N_WAITING = 1
S_N_SWAPPED = 2
S_N_RUNNING = 3
S_FREE_BLOCKS = 4
S_FREE_HOST = 5
S_N_FINISHED = 6
S_STEPS = 7
S_PREEMPT_RECOMPUTE = 8
S_PREEMPT_SWAP = 9
S_ERROR = 10           # 0 = fine; see ERR_* codes
S_BATCH = 11           # requests scheduled in the current step
S_SWAP_BLOCKS = 12     # blocks moved over the host link in the current step
S_PREEMPTED_NOW = 13   # 1 if the current step preempted someone
S_GUARD_OVERRIDES = 14 # evictions that had to ignore MemGuard to avoid a stall
S_QUEUED = 15          # async: batches formed whose output is not processed yet (0, 1 or 2)
S_Q_OLDEST = 16        # async: slot (0/1) of the oldest queued batch
S_Q_N0 = 17            # entries of the batch in slot 0 (S_Q_N0 + 1: slot 1)
S_Q_N1 = 18
S_SLOT = 19            # slot of the batch being formed
S_HIT_TOKENS = 20      # tokens served from the prefix cache (all admissions)
S_LOOKUP_TOKENS = 21   # tokens looked up in the prefix cache at admissions
S_EMPTY_BATCHES = 22   # async: formed batches that scheduled nothing
S_BLOG = 23            # rows used in the batch log (``record_batches``)
S_N_PREEMPTED = 24     # requests preempted while forming the current batch (Q_PREEMPTED)
S_EMPTY_RUN = 25       # empty batches formed in a row (a livelock guard)
S_N_ARRIVALS = 26      # requests in queues[Q_ARRIVALS]
S_COLS = 27

# --- float scalars (t) ---
T_NOW = 0
T_BUSY = 1             # total time spent in engine steps
T_NEXT_REFRESH = 2     # clock of the policy's next refresh
T_GPU_FREE = 3         # end of the last batch handed to the GPU
T_Q_START0 = 4         # start and end of the queued batch in slot 0 (then slot 1)
T_Q_START1 = 5
T_Q_END0 = 6
T_Q_END1 = 7
T_COLS = 8

# --- int config (cfg_i) ---
C_BUDGET = 0           # max_num_batched_tokens
C_MAX_SEQS = 1         # max_num_seqs
C_BLOCK_SIZE = 2
C_GPU_BLOCKS = 3
C_HOST_BLOCKS = 4
C_PREEMPT_MODE = 5     # PM_* below
C_LONG_PREFILL = 6     # long_prefill_token_threshold (0 = off)
C_CHUNKED = 7          # 1 = chunked prefill enabled
C_WATERMARK = 8        # blocks kept free when admitting waiting/swapped requests
C_POLICY = 9           # policy id (tailgym.policies)
C_CHECK = 10           # 1 = verify block conservation every step (slow, for tests)
C_VICTIM = 11          # victim rule (V_* below)
C_REPRIORITIZE = 12    # 1 = re-evaluate a request's priority after each step it runs
C_MODE = 13            # scheduler: MODE_* below
C_GUARD_K = 14         # MemGuard quantum in tokens (0 = no minimum-run protection)
C_COST_AWARE = 15      # 1 = pick swap or recompute per victim by cost (swap mode only)
C_ASYNC = 16           # 1 = async scheduling (vLLM's AsyncScheduler, batch queue of 2)
C_PREFIX = 17          # 1 = automatic prefix caching (block identities, hashes, LRU)
C_FULL_ISL = 18        # 1 = admit only if the whole remaining prompt fits (reserve_full_isl)
CI_COLS = 19

MODE_VLLM = 0          # vLLM: running first in admission order, waiting by priority, HOL blocking
MODE_PREEMPTIVE = 1    # one priority order over running, swapped and waiting requests

# --- float config (cfg_f) ---
CF_SWAP_S_PER_BLOCK = 0  # seconds to move one block over the host link
CF_DELTA = 1             # hysteresis: a victim's priority must be worse by more than this
CF_REFRESH_S = 2         # period of the policy's refresh (online statistics), 0 = never
CF_COLS = 3

PM_RECOMPUTE = 0
PM_SWAP = 1

# --- victim rules (cfg_i[C_VICTIM]) ---
V_LAST = 0             # vLLM FCFS: the most recently admitted running request
V_LOWEST_PRIORITY = 1  # vLLM priority mode: largest (priority, arrival)

# --- error codes (s[S_ERROR]) ---
ERR_NONE = 0
ERR_BLOCKS = 1         # block conservation violated
ERR_STALL = 2          # nothing schedulable although requests are pending

# --- step log columns ---
L_END = 0              # clock at the end of the step
L_DT = 1               # step time
L_PREFILL = 2          # prefill tokens
L_DECODE = 3           # decode sequences
L_CONTEXT = 4          # context tokens read
L_BATCH = 5            # requests in the batch
L_FREE = 6             # free GPU blocks after the step
L_HELD = 7             # GPU blocks held by running requests after the step
L_WAITING = 8
L_RUNNING = 9
L_SWAP = 10            # blocks moved over the host link
L_START = 11           # clock at the start of the step
L_COLS = 12

# --- batch log rows (record_batches) ---
BL_STEP = 0            # step index
BL_KIND = 1            # BLK_* below
BL_REQ = 2
BL_TOKENS = 3
BL_COLS = 4
BLK_SCHEDULED = 0
BLK_PREEMPTED = 1

N_FEATURES = 8  # step-time features (tailgym.hardware.FEATURES): const, prefill tokens, decode seqs, context tokens, prefill attention, prefill seqs, knee tokens, large-step tokens
