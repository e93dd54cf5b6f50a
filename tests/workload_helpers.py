"""Workload CSVs for env tests (envs take workloads by path, not as objects)."""
import numpy as np

import tailgym


def write_workload_csv(path, arrival, prompt, output) -> str:
    """Write a tailgym workload CSV (``arrival_s,prompt_tokens,output_tokens``); its path."""
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"{a!r},{p},{o}\n" for a, p, o in zip(np.asarray(arrival, float).tolist(), prompt,
                                            output)))
    return str(path)


def lengthened_pair(tmp_path, spec: str, rate: float, index: int, extra: int) -> list[str]:
    """CSV paths of ``spec`` at ``rate`` as drawn, and with request ``index``'s output
    ``extra`` tokens longer."""
    wl = tailgym.load_workload(spec, seed=0).with_rate(rate)
    paths = []
    for add in (0, extra):
        out = wl.output_tokens.copy()
        out[index] += add
        paths.append(write_workload_csv(tmp_path / f"w{add}.csv", wl.arrival_s,
                                        wl.prompt_tokens, out))
    return paths
