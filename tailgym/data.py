"""Named public data sets: local data-dir lookup, user cache and verified download.

Data files are never shipped with tailgym. :func:`data_path` finds a data set in a
local data directory (``TAILGYM_DATA_DIR``), in the user cache, or downloads it once
into the cache and checks its sha256. A data set is one file, or a folder of files
listed with their sha256 in a manifest shipped in ``tailgym/manifests/``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

_CHUNK = 1 << 16


class DataError(RuntimeError):
    """A data set could not be found, downloaded or verified."""


@dataclass(frozen=True)
class DataSet:
    """A public file known by name.

    ``relpath`` is its path inside a data directory (e.g. ``traces/x.csv``);
    ``sha256`` is the hash of the public file at ``url``.

    A folder data set has a ``manifest``: a ``sha256sum``-style file (``<sha256>  <file>``
    per line; a relative path is taken in ``tailgym/manifests/``) naming its files. Then
    ``relpath`` is the folder, ``url`` the folder's URL (file f is at ``url/f``) and
    ``sha256`` the hash of the manifest itself.
    """

    name: str
    relpath: str
    url: str
    sha256: str
    attribution: str
    manifest: str | None = None

    def files(self) -> dict[str, str]:
        """A folder data set's files, name -> sha256, from its manifest (whose own hash is checked)."""
        path = Path(__file__).with_name("manifests") / self.manifest
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise DataError(f"data set {self.name!r}: cannot read its manifest {path}: {exc}") from None
        if (actual := hashlib.sha256(text).hexdigest()) != self.sha256:
            raise DataError(f"data set {self.name!r}: manifest {path} has sha256 {actual}, expected {self.sha256}")
        return {name: digest for digest, _, name in (line.partition("  ") for line in text.decode().splitlines())}


_AZURE = (
    "Azure LLM inference trace 2023 (Azure/AzurePublicDataset), CC-BY 4.0. "
    "Patel et al., 'Splitwise: Efficient generative LLM inference using phase splitting', ISCA 2024."
)
_VIDUR = "microsoft/vidur profiling data, MIT license, (c) Microsoft."
_MOONCAKE = (
    "Mooncake FAST'25 traces (kvcache-ai/Mooncake), Apache-2.0. Qin et al., 'Mooncake: Trading More "
    "Storage for Less Computation - A KVCache-centric Architecture for Serving LLM Chatbot', FAST 2025."
)
_SERVEGEN = (
    "ServeGen DeepSeek-R1 reasoning workload (alibaba/ServeGen data/reason/deepseek-r1), Apache-2.0. "
    "Xiang et al., 'ServeGen: Workload Characterization of Large Language Model Serving in Production', "
    "arXiv 2505.09999."
)
_GH = "https://raw.githubusercontent.com"

DATASETS: dict[str, DataSet] = {
    d.name: d
    for d in (
        DataSet(
            "azure-conv",
            "traces/azure_llm_2023_conv.csv",
            f"{_GH}/Azure/AzurePublicDataset/master/data/AzureLLMInferenceTrace_conv.csv",
            "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
            _AZURE,
        ),
        DataSet(
            "azure-code",
            "traces/azure_llm_2023_code.csv",
            f"{_GH}/Azure/AzurePublicDataset/master/data/AzureLLMInferenceTrace_code.csv",
            "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
            _AZURE,
        ),
        DataSet(
            "mooncake-conv",
            "traces/mooncake_conversation_trace.jsonl",
            f"{_GH}/kvcache-ai/Mooncake/main/FAST25-release/traces/conversation_trace.jsonl",
            "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
            _MOONCAKE,
        ),
        DataSet(
            "mooncake-synthetic",
            "traces/mooncake_synthetic_trace.jsonl",
            f"{_GH}/kvcache-ai/Mooncake/main/FAST25-release/traces/synthetic_trace.jsonl",
            "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
            _MOONCAKE,
        ),
        DataSet(
            "servegen-r1",
            "servegen/deepseek-r1",
            f"{_GH}/alibaba/ServeGen/main/data/reason/deepseek-r1",
            "d47332a8a192bbd9e3a4503545fa9dafe494517d515bfe3030b84bdd19fc0658",
            _SERVEGEN,
            manifest="servegen-r1.sha256",
        ),
        DataSet(
            "splitwise-perf-model",
            "profiles/splitwise_perf_model.csv",
            f"{_GH}/Mutinifni/splitwise-sim/main/data/perf_model.csv",
            "dbbe505d1d64fc4bd1ec03c50edf944643586de4f68a81e94cbd55dd5bdfbf41",
            "Mutinifni/splitwise-sim data/perf_model.csv, MIT license, (c) 2024 Pratyush Patel.",
        ),
        DataSet(
            "vidur-h100-llama2-7b-mlp",
            "profiles/vidur_h100_llama2-7b_mlp.csv",
            f"{_GH}/microsoft/vidur/main/data/profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv",
            "b1a2def08857d10e5f66c3b5b2d046b6e8caed5c30b2bc920a0462598e3b2a59",
            _VIDUR,
        ),
        DataSet(
            "vidur-a100-llama3-8b-mlp",
            "profiles/vidur_a100_llama3-8b_mlp.csv",
            f"{_GH}/microsoft/vidur/main/data/profiling/compute/a100/meta-llama/Meta-Llama-3-8B/mlp.csv",
            "98c26488298e324e89db7349e213f75c856ae83dc6b17548a68636d2cb5efff0",
            _VIDUR,
        ),
    )
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The download cache: ``cache_dir``, else ``$TAILGYM_CACHE_DIR``, else ``~/.cache/tailgym``."""
    root = cache_dir or os.environ.get("TAILGYM_CACHE_DIR") or Path.home() / ".cache" / "tailgym"
    return Path(root).expanduser()


LOCAL_COPY = ("; to use a local copy, point TAILGYM_DATA_DIR at a folder laid out as "
              "`tailgym data list` shows")


def download(url: str, dest: str | os.PathLike, sha256: str, *, progress: bool = True) -> Path:
    """Stream ``url`` to ``dest`` atomically, verifying its sha256."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(
                        total=total, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, file=sys.stderr, disable=not progress,
                    ) as bar:
                        while chunk := resp.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts, short reads
                raise DataError(f"download of {url} failed: {exc}{LOCAL_COPY}") from exc
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise DataError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}"
                            f"{LOCAL_COPY}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


_fetch = download  # data_path's ``download`` flag shadows the function name


def data_path(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Local path of data set ``name``.

    Looks in ``data_dir``, then ``$TAILGYM_DATA_DIR``, then the cache (see
    :func:`cache_root`); if still missing and ``download`` is true, downloads it into
    the cache. Files in a data dir are trusted as is; downloads are sha256-checked.
    A folder data set is found where all its files are (a data dir holding only some
    is an error); the cache's missing ones are downloaded.
    """
    try:
        ds = DATASETS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}") from None
    roots = [Path(d).expanduser() for d in (data_dir, os.environ.get("TAILGYM_DATA_DIR")) if d]
    cached = cache_root(cache_dir) / ds.relpath
    candidates = [r / ds.relpath for r in roots] + [cached]
    if ds.manifest:
        return _folder_path(ds, candidates, download, progress)
    for path in candidates:
        if path.is_file():
            return path
    if not download:
        looked = "\n  ".join(str(p) for p in candidates)
        raise DataError(
            f"data set {name!r} not found; looked in:\n  {looked}\n"
            f"Set TAILGYM_DATA_DIR to a directory containing {ds.relpath}, "
            f"or allow the download from {ds.url}."
        )
    _fetch(ds.url, cached, ds.sha256, progress=progress)
    return cached


def _folder_path(ds: DataSet, candidates: list[Path], download: bool, progress: bool) -> Path:
    """:func:`data_path` for a folder data set; the last candidate is the cache."""
    files = ds.files()
    for path in candidates[:-1]:
        if path.is_dir():
            if missing := [f for f in files if not (path / f).is_file()]:
                raise DataError(f"data set {ds.name!r} in {path} lacks {len(missing)} of its {len(files)} "
                                f"files (first {missing[0]}); add them or remove the folder")
            return path
    cached = candidates[-1]
    missing = [f for f in files if not (cached / f).is_file()]
    if missing and not download:
        looked = "\n  ".join(str(p) for p in candidates)
        raise DataError(
            f"data set {ds.name!r} ({len(files)} files) not found; looked in:\n  {looked}\n"
            f"Set TAILGYM_DATA_DIR to a directory containing {ds.relpath}/, "
            f"or allow the download from {ds.url}/."
        )
    for f in tqdm(missing, desc=ds.name, unit="file", file=sys.stderr, disable=not (progress and missing)):
        _fetch(f"{ds.url}/{f}", cached / f, files[f], progress=False)
    return cached
