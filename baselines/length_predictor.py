"""A learned output-length predictor for the Azure 2023 traces (drives ``srpt_learned.py``).

    python -m baselines.length_predictor [--epochs 30] [--seed 0] [--checkpoint PATH]

Data: ``azure-conv`` and ``azure-code``, each split by time: the first 70% of its requests
(by arrival) train, the last 30% test. Features, all known when a request arrives: log
prompt length and a one-hot of the trace (the workload class). Left out: hour of day (each
trace spans one hour), seconds into the trace (a time split would ask the model to
extrapolate it) and statistics of finished requests' outputs (which depend on the schedule);
a feature of recent arrival burstiness changed validation Spearman by under 0.01, so it went.

Model: an MLP (2 hidden layers, SiLU) from the features to log output length, trained with a
pinball loss (``--quantile 0.5``: the median, which minimises the MAE of log length; it beat
MSE on a validation split of the training period). Seeded, deterministic on the CPU.

Reported on the test split, per trace: MAE of log length, Spearman and Kendall tau vs the
truth, against the trace's training median (a constant) and a per-trace least-squares fit of
log output on log prompt. Saves ``state_dict`` (with the feature normalisation as buffers)
and the config to ``--checkpoint``; ``load_predictor`` / ``predict`` use it on any workload
whose name starts with a trace name (or pass ``trace=``).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from torch import nn

from tailgym import load_workload
from tailgym.workload import Workload

TRACES = ("azure-conv", "azure-code")
CHECKPOINT = Path(__file__).parent / "checkpoints" / "length_predictor.pt"


def trace_of(workload: Workload) -> str:
    """The trace a workload comes from, by its name (``azure-conv:start=...`` -> azure-conv)."""
    head = workload.name.partition(":")[0]
    if head not in TRACES:
        raise ValueError(f"workload {workload.name!r} is not from a known trace ({', '.join(TRACES)}); "
                         f"pass trace= to say which class it belongs to")
    return head


def features(workload: Workload, trace: str | None = None) -> np.ndarray:
    """Per request: log prompt tokens and the trace one-hot, float32 ``(n, 1 + len(TRACES))``."""
    trace = trace or trace_of(workload)
    x = np.zeros((len(workload), 1 + len(TRACES)), dtype=np.float32)
    x[:, 0] = np.log(workload.prompt_tokens)
    x[:, 1 + TRACES.index(trace)] = 1.0
    return x


def time_split(workload: Workload, train_fraction: float) -> tuple[Workload, Workload]:
    """The first ``train_fraction`` of the requests by arrival, and the rest."""
    cut = int(train_fraction * len(workload))
    return workload.window(0, cut), workload.window(cut, len(workload) - cut)


class LengthMLP(nn.Module):
    """Features -> predicted log output length; normalises its input with stored buffers."""

    def __init__(self, n_in: int, hidden: int, mean=None, std=None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in) if mean is None else torch.as_tensor(mean))
        self.register_buffer("std", torch.ones(n_in) if std is None else torch.as_tensor(std))
        self.net = nn.Sequential(
            nn.utils.skip_init(nn.Linear, n_in, hidden), nn.SiLU(),
            nn.utils.skip_init(nn.Linear, hidden, hidden), nn.SiLU(),
            nn.utils.skip_init(nn.Linear, hidden, 1))

    def init_weights(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear init, drawn from ``generator`` (not the global RNG)."""
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / np.sqrt(layer.in_features)
                nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)


def pinball(pred: torch.Tensor, target: torch.Tensor, quantile: float) -> torch.Tensor:
    """Mean quantile loss; ``quantile`` 0.5 is half the absolute error."""
    err = target - pred
    return torch.maximum(quantile * err, (quantile - 1.0) * err).mean()


def train(x: np.ndarray, y_log: np.ndarray, *, epochs: int = 30, batch_size: int = 256,
          lr: float = 1e-3, hidden: int = 64, quantile: float = 0.5, seed: int = 0) -> LengthMLP:
    """Fit a ``LengthMLP`` to log output lengths with Adam on shuffled minibatches."""
    std = np.where(x.std(0) > 0, x.std(0), 1.0)
    model = LengthMLP(x.shape[1], hidden, torch.tensor(x.mean(0)), torch.tensor(std, dtype=torch.float32))
    gen = torch.Generator().manual_seed(seed)
    model.init_weights(gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.tensor(x), torch.tensor(y_log, dtype=torch.float32)
    for _ in range(epochs):
        for batch in torch.randperm(len(xt), generator=gen).split(batch_size):
            loss = pinball(model(xt[batch]), yt[batch], quantile)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def predict(model: LengthMLP, workload: Workload, trace: str | None = None) -> np.ndarray:
    """Predicted output lengths (tokens, float64 > 0), one per request of ``workload``."""
    with torch.no_grad():
        log_len = model(torch.tensor(features(workload, trace))).double().numpy()
    return np.exp(log_len)


def save_predictor(model: LengthMLP, path, config: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": config}, path)


def load_predictor(path=CHECKPOINT) -> LengthMLP:
    """The model saved by this script; its training config is in ``model.config``."""
    ckpt = torch.load(path, weights_only=True)
    cfg = ckpt["config"]
    if tuple(cfg["traces"]) != TRACES:
        raise ValueError(f"{path}: trained on {cfg['traces']}, this code expects {TRACES}")
    model = LengthMLP(1 + len(TRACES), cfg["hidden"])
    model.load_state_dict(ckpt["state_dict"])
    model.config = cfg
    model.eval()
    return model


def scores(pred_log: np.ndarray, true_log: np.ndarray) -> dict:
    """MAE of log length and rank correlations (nan for a constant prediction)."""
    constant = np.ptp(pred_log) == 0
    return {"mae_log": float(np.abs(pred_log - true_log).mean()),
            "spearman": np.nan if constant else float(spearmanr(pred_log, true_log).statistic),
            "kendall": np.nan if constant else float(kendalltau(pred_log, true_log).statistic)}


def evaluate(model: LengthMLP, train_fraction: float, data_dir=None) -> list[dict]:
    """Test-split scores per trace of the constant, the linear fit and ``model``."""
    rows = []
    for trace in TRACES:
        train_wl, test_wl = time_split(load_workload(trace, data_dir=data_dir), train_fraction)
        y_train, y_test = np.log(train_wl.output_tokens), np.log(test_wl.output_tokens)
        slope, icept = np.polyfit(np.log(train_wl.prompt_tokens), y_train, 1)
        preds = {"constant (train median)": np.full(len(test_wl), np.median(y_train)),
                 "linear in log prompt": icept + slope * np.log(test_wl.prompt_tokens),
                 "MLP": np.log(predict(model, test_wl, trace))}
        for name, p in preds.items():
            rows.append({"trace": trace, "n_test": len(test_wl), "predictor": name,
                         **scores(p, y_test)})
    return rows


def metrics_table(rows: list[dict]) -> str:
    lines = ["| trace | test requests | predictor | MAE log length | Spearman | Kendall tau |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['trace']} | {r['n_test']} | {r['predictor']} | {r['mae_log']:.3f} | "
                     f"{r['spearman']:.3f} | {r['kendall']:.3f} |".replace("nan", "-"))
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-fraction", type=float, default=0.7, help="first share of each trace that trains")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64, help="width of both hidden layers")
    p.add_argument("--quantile", type=float, default=0.5, help="pinball-loss quantile of log length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    p.add_argument("--data-dir", default=None, help="trace directory (default: $TAILGYM_DATA_DIR)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    splits = [time_split(load_workload(t, data_dir=args.data_dir), args.train_fraction)[0] for t in TRACES]
    x = np.concatenate([features(w, t) for w, t in zip(splits, TRACES)])
    y = np.concatenate([np.log(w.output_tokens) for w in splits])
    model = train(x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  hidden=args.hidden, quantile=args.quantile, seed=args.seed)
    config = {k: v for k, v in vars(args).items() if k not in ("checkpoint", "data_dir")}
    save_predictor(model, args.checkpoint, {**config, "traces": list(TRACES)})
    print(f"trained on {len(x)} requests in {time.perf_counter() - t0:.1f} s; saved {args.checkpoint}")
    print(metrics_table(evaluate(model, args.train_fraction, args.data_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
