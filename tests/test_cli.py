import subprocess
import sys

import pytest

from minirt.__main__ import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minirt", *args], capture_output=True, text=True, timeout=300
    )


def test_generate_prints_the_continuation_and_its_finish_reason():
    r = run_cli("generate", "def fib(n):", "--max-tokens", "12", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def fib(n):") and "12 tokens, finish_reason=length" in r.stdout


def test_kv_size_prints_the_formula_and_the_h100_concurrency(capsys):
    assert main(["kv-size", "--model", "qwen3-0.6b", "--seq-len", "4096", "--batch", "32"]) == 0
    out = capsys.readouterr().out
    assert "2 x 28 x 8 x 128 x 2 B = 114,688 B (112.0 KiB)" in out
    assert "14.00 GiB" in out  # 32 x 4096 x 112 KiB
    assert "at most 167 sequences" in out


@pytest.mark.parametrize("cmd", [[], ["generate"], ["kv-size"]])
def test_help_works_for_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


def test_a_bad_model_path_is_an_error_message_not_a_traceback(capsys):
    assert main(["kv-size", "--model", "/nope"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["kv-size", "--block-size", "0"], "error: --block-size must be >= 1, got 0"),
        (["kv-size", "--seq-len", "0"], "error: --seq-len must be >= 1, got 0"),
        (["kv-size", "--gpu-mem-gb", "nan"], "error: --gpu-mem-gb must be a finite number"),
        (["generate", "x", "--temperature", "nan"], "error: temperature must be a finite number"),
        (["generate", "x", "--kv-cache-mb", "nan"], "error: kv_cache_bytes must be a finite"),
        (["generate", "x", "--device", "bogus"], "error: device must be 'auto', 'cpu', 'cuda'"),
    ],
)
def test_bad_numbers_are_one_error_line_naming_the_flag_or_field(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_malformed_config_json_is_one_error_line_naming_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "qwen3",')
    r = run_cli("kv-size", "--model", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {tmp_path / 'config.json'} is not valid JSON"), r.stderr
