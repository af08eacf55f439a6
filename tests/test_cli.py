"""The lpu command line, run as a user would."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

import lpu

from conftest import ROOT


def lpu_cmd(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpu", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_the_commands():
    for out in (lpu_cmd("--help").stdout,
                subprocess.run(["lpu", "--help"], capture_output=True, text=True).stdout):
        for cmd in ("info", "asm", "dis", "run", "generate", "demo"):
            assert cmd in out


def test_info_prints_config_and_isa():
    r = lpu_cmd("info")
    assert r.returncode == 0
    assert "320 (20 superlanes x 16)" in r.stdout and "220.0 MiB" in r.stdout and "900 MHz" in r.stdout
    assert f"total {len(lpu.isa.instructions())} instructions" in r.stdout


def test_asm_dis_run_round_trip(tmp_path):
    src = open(os.path.join(ROOT, "docs", "assembly.md")).read().split("```\n")[1]
    (tmp_path / "add.s").write_text(src)
    r = lpu_cmd("asm", "add.s", "-o", "add.lpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = lpu_cmd("dis", "add.lpu", cwd=tmp_path)
    assert r.returncode == 0
    (tmp_path / "again.s").write_text(r.stdout)
    assert lpu_cmd("asm", "again.s", "-o", "again.lpu", cwd=tmp_path).returncode == 0
    assert (tmp_path / "again.lpu").read_bytes() == (tmp_path / "add.lpu").read_bytes()
    x = np.arange(128, dtype=np.int8).reshape(4, 32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", x)
    r = lpu_cmd("run", "add.lpu", "--input", "x=x.npy", "--input", "y=y.npy", "--out-dir", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "z.npy"), x + x)
    assert "cycles            14" in r.stdout and "MEM" in r.stdout


def test_errors_are_reported_not_raised(tmp_path):
    (tmp_path / "bad.s").write_text(".chip tsp_small\n.queue mem.W0.0\n    read 0, s99e\n")
    r = lpu_cmd("asm", "bad.s", cwd=tmp_path)
    assert r.returncode == 1 and "bad.s:3:13" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk.lpu").write_bytes(b"not a program")
    r = lpu_cmd("dis", "junk.lpu", cwd=tmp_path)
    assert r.returncode == 1 and "magic" in r.stderr


def test_demo_checks_its_result():
    r = lpu_cmd("demo", "--config", "tsp_small", "--rows", "3")
    assert r.returncode == 0 and "matches numpy" in r.stdout


def test_generate_with_a_model_directory(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from llm_reference import random_model

    from lpu.llm import save_hf

    save_hf(random_model(1, dim=64, hidden_dim=128, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=32),
            tmp_path / "m")
    r = lpu_cmd("generate", "--model", str(tmp_path / "m"), "--prompt", "ab", "--max-tokens", "5",
                "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ab")
    for line in ("tokens            5 generated", "emulated cycles", "predicted LPU", "tokens/s at 900 MHz",
                 "MXM utilisation"):
        assert line in r.stderr


def test_readme_main_command_with_the_bundled_model():
    """The README's main command (after pip install): sampled text from the bundled model,
    and, greedy, exactly the numpy reference model's continuation."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    cmd = re.search(r"pip install \. && (lpu generate [^\n`]*)", readme).group(1)
    args = shlex.split(cmd)[1:]
    r = lpu_cmd(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def ") and len(r.stdout) > len("def ") + 10
    assert "tokens            64 generated" in r.stderr

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from llm_reference import ReferenceModel

    from lpu.llm import load_bundled

    model = load_bundled()
    prompt = model.tokenizer.encode("def ")
    want = model.tokenizer.decode(prompt + ReferenceModel(model).greedy(prompt, 24))
    r = lpu_cmd(*args[:-1], "24", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n") == want.rstrip("\n")


@pytest.mark.parametrize("option, value, said", [("--max-tokens", "-3", "max_new_tokens must be >= 0"),
                                                 ("--temperature", "nan", "temperature must be"),
                                                 ("--top-p", "0", "top_p must be in (0, 1]")])
def test_generate_refuses_bad_options_before_loading_anything(option, value, said):
    r = lpu_cmd("generate", "--model", "/no/such/model", option, value)
    # The option is refused first: the missing model is never looked at.
    assert r.returncode == 1 and said in r.stderr and "loading" not in r.stderr
