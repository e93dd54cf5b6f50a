"""Data-set registry, lookup and verified download (against a loopback HTTP server only)."""

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tailgym.data import DATASETS, DataError, cache_root, data_path, download

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PAYLOAD = b"TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:15:46.6805900,374,44\r\n" * 50
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No real data dir, a private cache, and no proxy for loopback requests."""
    monkeypatch.delenv("TAILGYM_DATA_DIR", raising=False)
    monkeypatch.setenv("TAILGYM_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1")


@pytest.fixture
def server(tmp_path):
    """Loopback HTTP server serving tmp_path/srv, recording requested paths."""
    root = tmp_path / "srv"
    root.mkdir()
    (root / "trace.csv").write_bytes(PAYLOAD)
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", hits=hits)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def served_conv(monkeypatch, server):
    """Point the azure-conv data set at the loopback server."""
    ds = dataclasses.replace(DATASETS["azure-conv"], url=f"{server.url}/trace.csv", sha256=PAYLOAD_SHA)
    monkeypatch.setitem(DATASETS, "azure-conv", ds)
    return ds


def test_registry_names_and_hashes():
    assert set(DATASETS) == {
        "azure-conv", "azure-code", "mooncake-conv", "mooncake-synthetic", "servegen-r1",
        "splitwise-perf-model", "vidur-h100-llama2-7b-mlp", "vidur-a100-llama3-8b-mlp"
    }
    for name, ds in DATASETS.items():
        assert ds.name == name and ds.url.startswith("https://") and len(ds.sha256) == 64 and ds.attribution


def test_shared_files_resolve_and_match_public_hashes():
    for name, ds in DATASETS.items():
        path = data_path(name, data_dir=SHARED, download=False)
        assert path == SHARED / ds.relpath
        if ds.manifest:  # a folder: every file as its manifest says
            files = ds.files()
            assert sorted(files) == sorted(p.name for p in path.iterdir())
            assert all(hashlib.sha256((path / f).read_bytes()).hexdigest() == h for f, h in files.items())
        elif name != "splitwise-perf-model":  # the shared copy is trimmed on purpose
            assert hashlib.sha256(path.read_bytes()).hexdigest() == ds.sha256


def test_servegen_manifest_lists_its_73_clients():
    files = DATASETS["servegen-r1"].files()
    assert sorted(files) == sorted(f"chunk-{c}-{kind}" for c in range(73) for kind in ("trace.csv", "dataset.json"))


@pytest.fixture
def served_folder(monkeypatch, server, tmp_path):
    """A two-file folder data set on the loopback server, its manifest in tmp_path."""
    (server_dir := tmp_path / "srv" / "pool").mkdir()
    files = {"a.csv": b"1,2\n", "b.json": b"{}"}
    for f, body in files.items():
        (server_dir / f).write_bytes(body)
    manifest = tmp_path / "pool.sha256"
    manifest.write_text("".join(f"{hashlib.sha256(b).hexdigest()}  {f}\n" for f, b in files.items()))
    ds = dataclasses.replace(DATASETS["servegen-r1"], url=f"{server.url}/pool", manifest=str(manifest),
                             sha256=hashlib.sha256(manifest.read_bytes()).hexdigest())
    monkeypatch.setitem(DATASETS, "servegen-r1", ds)
    return ds


def test_a_folder_data_set_downloads_its_missing_files_once(served_folder, server, tmp_path):
    cache = tmp_path / "cache" / served_folder.relpath
    cache.mkdir(parents=True)
    (cache / "a.csv").write_bytes(b"1,2\n")  # from an earlier, interrupted download
    assert data_path("servegen-r1", progress=False) == cache
    assert (cache / "b.json").read_bytes() == b"{}" and server.hits == ["/pool/b.json"]
    assert data_path("servegen-r1", download=False) == cache and server.hits == ["/pool/b.json"]


def test_a_folder_data_set_checks_its_manifest_and_file_hashes(served_folder, server, tmp_path):
    (tmp_path / "srv" / "pool" / "b.json").write_bytes(b"[]")
    with pytest.raises(DataError, match="checksum mismatch for .*/pool/b.json"):
        data_path("servegen-r1", progress=False)
    Path(served_folder.manifest).write_text("0" * 64 + "  a.csv\n")
    with pytest.raises(DataError, match="manifest .* has sha256"):
        data_path("servegen-r1", progress=False)


def test_a_partial_folder_in_the_data_dir_is_an_error(served_folder, server, tmp_path):
    local = tmp_path / "data" / served_folder.relpath
    local.mkdir(parents=True)
    (local / "a.csv").write_text("local\n")
    with pytest.raises(DataError, match=r"lacks 1 of its 2 files \(first b.json\)"):
        data_path("servegen-r1", data_dir=tmp_path / "data")
    (local / "b.json").write_text("local, not checked\n")
    assert data_path("servegen-r1", data_dir=tmp_path / "data") == local and server.hits == []
    with pytest.raises(DataError, match=r"(?s)servegen-r1' \(2 files\) not found.*TAILGYM_DATA_DIR"):
        data_path("servegen-r1", data_dir=tmp_path / "elsewhere", download=False)


def test_download_verifies_and_is_atomic(server, tmp_path, capsys):
    dest = tmp_path / "out" / "trace.csv"
    assert download(f"{server.url}/trace.csv", dest, PAYLOAD_SHA) == dest
    assert dest.read_bytes() == PAYLOAD
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left
    assert "trace.csv" in capsys.readouterr().err  # tqdm progress bar on stderr


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "out" / "trace.csv"
    url = f"{server.url}/trace.csv"
    with pytest.raises(DataError) as err:
        download(url, dest, "0" * 64, progress=False)
    assert url in str(err.value) and "0" * 64 in str(err.value) and PAYLOAD_SHA in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_download_http_error_names_url(server, tmp_path):
    url = f"{server.url}/missing.csv"
    with pytest.raises(DataError, match=url):
        download(url, tmp_path / "x.csv", PAYLOAD_SHA, progress=False)
    assert not any("x.csv" in p.name for p in tmp_path.iterdir())


def test_data_path_downloads_once_then_uses_cache(served_conv, server, tmp_path):
    cache = tmp_path / "mycache"
    first = data_path("azure-conv", cache_dir=cache, progress=False)
    assert first == cache / served_conv.relpath and first.read_bytes() == PAYLOAD
    assert data_path("azure-conv", cache_dir=cache, progress=False) == first
    assert data_path("azure-conv", cache_dir=cache, download=False) == first
    assert server.hits == ["/trace.csv"]


def test_cache_dir_from_env(served_conv, tmp_path):
    path = data_path("azure-conv", progress=False)
    assert path == tmp_path / "cache" / served_conv.relpath


def test_data_dir_lookup_order_and_trust(monkeypatch, tmp_path, served_conv, server):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    for root in (env_dir, arg_dir):
        (root / served_conv.relpath).parent.mkdir(parents=True)
        (root / served_conv.relpath).write_text("local copy, hash not checked\n")
    monkeypatch.setenv("TAILGYM_DATA_DIR", str(env_dir))
    assert data_path("azure-conv") == env_dir / served_conv.relpath
    assert data_path("azure-conv", data_dir=arg_dir) == arg_dir / served_conv.relpath
    assert server.hits == []


def test_mooncake_download_and_load(monkeypatch, server, tmp_path):
    """A named JSONL trace downloads into the cache once, then loads by name."""
    from tailgym.workload import load_workload
    line = b'{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [7, 8]}\n'
    (tmp_path / "srv" / "conv.jsonl").write_bytes(line * 3)
    ds = dataclasses.replace(DATASETS["mooncake-conv"], url=f"{server.url}/conv.jsonl",
                             sha256=hashlib.sha256(line * 3).hexdigest())
    monkeypatch.setitem(DATASETS, "mooncake-conv", ds)
    w = load_workload("mooncake-conv:n=2")
    assert len(w) == 2 and w.hash_ids.tolist() == [7, 8, 7, 8] and server.hits == ["/conv.jsonl"]
    assert data_path("mooncake-conv", download=False) == tmp_path / "cache" / ds.relpath


def test_missing_without_download_explains(tmp_path):
    with pytest.raises(DataError) as err:
        data_path("azure-code", data_dir=tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "TAILGYM_DATA_DIR" in msg and str(tmp_path / "nowhere") in msg and "traces/azure_llm_2023_code.csv" in msg


def test_unknown_name_lists_known():
    with pytest.raises(DataError) as err:
        data_path("no-such-set")
    assert "no-such-set" in str(err.value) and all(name in str(err.value) for name in DATASETS)


def test_cache_root_default(monkeypatch):
    monkeypatch.delenv("TAILGYM_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "tailgym"
