"""`cadence generate` as a user runs it: text on stdout, clear errors, every flag documented."""

from __future__ import annotations

import subprocess
import sys


def cadence(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cadence.cli", *args], capture_output=True, text=True, timeout=300)


def test_generate_streams_text():
    r = cadence("generate", "--prompt", "What is the capital of France?", "--max-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_bad_sampling_value_names_the_parameter():
    r = cadence("generate", "--prompt", "hi", "--top-p", "0")
    assert r.returncode == 2
    assert "top_p" in r.stderr and "Traceback" not in r.stderr


def test_help_documents_the_flags():
    r = cadence("generate", "--help")
    assert r.returncode == 0
    for flag in ("--prompt", "--max-tokens", "--temperature", "--model", "--policy", "--max-num-batched-tokens",
                 "--block-size", "--enable-prefix-caching", "--tensor-parallel-size", "--load-format"):
        assert flag in r.stdout, flag
