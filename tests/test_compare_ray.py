"""``tailgym compare --backend ray``: a local Ray stores the same files as the process backend,
resumes a grid either backend began, hands the workers the data directory, and says in one
line what is missing or wrong. Ray is a test dependency (``tailgym[test]``), never skipped."""
import json
import logging
import sys

import pytest
import ray

from tailgym import compare
from tailgym.cli import main
from tailgym.compare import CompareError, Policy, make_grid, parse_policies, run_grid

WORKLOAD = "default:n=200"


def _grid():
    return make_grid(WORKLOAD, parse_policies("fcfs,las"), [0.9], [0, 1])


@pytest.fixture(scope="module", autouse=True)
def _shutdown_ray():
    yield
    ray.shutdown()


@pytest.fixture
def local_ray():
    """A local Ray of 2 CPUs, started once and kept for the module's later tests."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level=logging.ERROR)


def _stored(out_dir) -> dict:
    """Every stored file's bytes by name; a summary's measured ``wall_s`` set aside."""
    files = {}
    for path in sorted((out_dir / "cells").iterdir()):
        files[path.name] = path.read_bytes()
        if path.suffix == ".json":
            record = json.loads(files[path.name])
            assert record.pop("wall_s") > 0
            files[path.name] = json.dumps(record).encode()
    return files


def test_the_cli_starts_a_local_ray_of_processes_cpus_and_shuts_it_down(tmp_path, monkeypatch,
                                                                         capsys):
    ray.shutdown()  # none running: the command starts its own
    inits = []
    real = ray.init
    monkeypatch.setattr(ray, "init", lambda **kw: inits.append(kw) or real(**kw))
    assert main(["compare", "--workload", WORKLOAD, "--policies", "fcfs,las", "--loads", "0.9",
                 "--seeds", "0,1", "--backend", "ray", "--processes", "2", "--no-plots", "-q",
                 "--out", str(tmp_path / "ray")]) == 0
    assert [(kw["address"], kw["num_cpus"]) for kw in inits] == [("local", 2)]
    assert not ray.is_initialized()
    assert main(["compare", "--workload", WORKLOAD, "--policies", "fcfs,las", "--loads", "0.9",
                 "--seeds", "0,1", "--processes", "1", "--no-plots", "-q",
                 "--out", str(tmp_path / "process")]) == 0
    assert capsys.readouterr().err == ""
    for name in ("results.csv", "summary.csv", "ranking.csv"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "process" / name).read_bytes()


def test_ray_and_process_backends_store_the_same_bytes(tmp_path, local_ray):
    cells = _grid()
    by_process = run_grid(cells, tmp_path / "process")
    by_ray = run_grid(cells, tmp_path / "ray", backend="ray")
    assert by_ray == by_process and len(by_ray) == 4
    stored = _stored(tmp_path / "ray")
    assert len(stored) == 8 and stored == _stored(tmp_path / "process")
    assert compare.aggregate(by_ray) == compare.aggregate(by_process)


def test_ray_resumes_a_grid_without_recomputing_its_stored_cells(tmp_path, local_ray,
                                                                 monkeypatch):
    cells = _grid()
    run_grid(cells[:1], tmp_path)  # begun by the process backend, then killed
    kept = [p.stat() for p in compare.cell_paths(tmp_path, cells[0])]
    submitted = []
    real = compare._execute_ray
    monkeypatch.setattr(compare, "_execute_ray",
                        lambda todo, *rest: submitted.extend(todo) or real(todo, *rest))
    rows = run_grid(cells, tmp_path, backend="ray")
    assert submitted == cells[1:] and len(rows) == 4
    after = [p.stat() for p in compare.cell_paths(tmp_path, cells[0])]
    assert [(s.st_ino, s.st_mtime_ns) for s in after] == [(s.st_ino, s.st_mtime_ns) for s in kept]
    assert run_grid(cells, tmp_path, backend="ray") == rows and submitted == cells[1:]


def test_workers_read_the_drivers_data_directory(tmp_path, local_ray, monkeypatch):
    """Set after Ray started, so only the task's environment can carry it to the workers."""
    from tailgym.data import DATASETS, data_path
    trace = tmp_path / "data" / DATASETS["azure-conv"].relpath
    trace.parent.mkdir(parents=True)
    trace.write_text("".join(data_path("azure-conv").read_text().splitlines(True)[:31]))
    monkeypatch.setenv("TAILGYM_DATA_DIR", str(tmp_path / "data"))
    cells = make_grid("azure-conv", [Policy("fcfs")], [0.5], [0])
    [row] = run_grid(cells, tmp_path / "out", backend="ray")
    assert row["requests_in"] == 30


def test_a_failing_cell_names_itself_in_one_line(tmp_path, local_ray, capsys):
    cells = make_grid(WORKLOAD, [Policy("fcfs")], [0.5], [3], engine={"kv_blocks": 4})
    with pytest.raises(CompareError, match="^fcfs at load 0.5, seed 3: no request .* fits"):
        run_grid(cells, tmp_path, backend="ray")
    assert main(["compare", "--workload", WORKLOAD, "--policies", "fcfs", "--loads", "0.5",
                 "--seeds", "3", "--kv-blocks", "4", "--backend", "ray", "-q",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tailgym compare: error: fcfs at load 0.5, seed 3:")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_without_ray_the_backend_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(CompareError, match=r"--backend ray needs Ray: pip install 'tailgym\["):
        run_grid(_grid(), tmp_path, backend="ray")
    assert main(["compare", "--backend", "ray", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "tailgym compare: error: --backend ray needs Ray: pip install 'tailgym[ray]'\n")


def test_a_ray_address_needs_the_ray_backend(tmp_path, capsys):
    assert main(["compare", "--ray-address", "auto", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "tailgym compare: error: --ray-address needs --backend ray\n")
    with pytest.raises(CompareError, match="--backend must be one of process, ray, got 'dask'"):
        run_grid(_grid(), tmp_path, backend="dask")
