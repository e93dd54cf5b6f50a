"""The tailgym command line."""
import json
import subprocess
import sys

from tailgym.cli import main


def test_run_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--workload", "azure-code:n=300", "--model", "llama2-7b",
                 "--max-num-seqs", "64", "--kv-blocks", "3000", "--slo", "ttft=1",
                 "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "TTFT" in text and "TTLT" in text and "azure-code" in text
    s = json.loads(out.read_text())
    assert s["requests_in"] == 300 and s["config"]["max_num_seqs"] == 64
    assert s["config"]["num_gpu_blocks"] == 3000 and "ttft<=1" in s["slo_attainment"]
    assert set(s["ttlt"]) >= {"mean", "p50", "p90", "p95", "p99"}


def test_policy_args_and_rate_options_parse(capsys):
    assert main(["run", "--workload", "default:n=100", "--load", "0.5", "-q"]) == 0
    assert "load 0.5" in capsys.readouterr().out
    assert main(["run", "--workload", "default:n=50", "--policy-arg", "gamma=2", "-q"]) == 2
    assert "no knob 'gamma'" in capsys.readouterr().err


def test_bad_csv_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_tokens,output_tokens\r\n0.0,12,5\r\n0.5,-3,5\r\n")
    assert main(["run", "--workload", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "prompt_tokens" in err and "-3" in err and ":3" in err


def test_column_mapping_reads_wall_clock_timestamps(tmp_path, capsys):
    f = tmp_path / "azure-like.csv"
    f.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n")
    assert main(["run", "--workload", str(f), "-q", "--columns",
                 "arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens"]) == 0
    assert "2 in, 2 completed" in capsys.readouterr().out


def test_console_entry_point_runs_as_module():
    r = subprocess.run([sys.executable, "-m", "tailgym.cli", "data", "list"], capture_output=True,
                       text=True, check=True)
    assert "azure-conv" in r.stdout and "CC-BY" in r.stdout


def test_policy_args_accept_words_and_policies_are_listed(capsys):
    assert main(["run", "--workload", "default:n=60", "--policy", "uniboost", "--policy-arg",
                 "gamma_mode=ada", "--policy-arg", "k=64", "-q"]) == 0
    assert main(["policies", "uniboost"]) == 0
    out = capsys.readouterr().out
    assert "gamma_mode = auto" in out and "output lengths: none" in out
