"""`make train` / `make bench` check their settings before making a store (no minutes of SynthTalk
generation before "unknown method"), and the `--check` options of both commands."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with the Makefile, an up-to-date stamp and a bin/talkinghead that logs its
    arguments and runs the real CLI only for ``--check`` (else it does nothing)."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "stamp").touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    script = bin_dir / "talkinghead"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case " $* " in *" --check "*) exec {sys.executable} -m talkinghead.cli "$@";; esac
exit 0
""")
    script.chmod(0o755)
    return bin_dir, log


def _make(tmp_path: Path, bin_dir: Path, *words: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAKEFLAGS": ""}
    return subprocess.run(["make", "--no-print-directory", f"BIN={bin_dir}", f"STAMP={tmp_path / 'stamp'}", *words],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_make_train_unknown_method_fails_fast_and_makes_no_data(tmp_path):
    bin_dir, log = _sandbox(tmp_path)
    done = _make(tmp_path, bin_dir, "train", "METHOD=nosuch")
    assert done.returncode != 0
    assert "unknown method 'nosuch'" in done.stderr and "pdfgc" in done.stderr  # the choices
    assert not (tmp_path / "data").exists()
    assert log.read_text().splitlines() == ["train --method nosuch --check"]  # nothing after the check

    log.unlink()
    done = _make(tmp_path, bin_dir, "train", "METHOD=pdfgc", "ARGS=motion.max_step=5")  # a key typo
    assert done.returncode != 0 and "max_step" in done.stderr
    assert len(log.read_text().splitlines()) == 1 and not (tmp_path / "data").exists()


def test_make_train_checks_then_makes_the_store_then_trains(tmp_path):
    bin_dir, log = _sandbox(tmp_path)
    done = _make(tmp_path, bin_dir, "train", "METHOD=pdfgc")
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == ["train --method pdfgc --check", "data --out data --layouts vox2",
                                            "train --method pdfgc"]


def test_make_bench_unknown_method_or_metric_fails_fast(tmp_path):
    bin_dir, log = _sandbox(tmp_path)
    done = _make(tmp_path, bin_dir, "bench", "METHODS=static nosuch")
    assert done.returncode != 0 and "choose from" in done.stderr and "ground_truth" in done.stderr
    done = _make(tmp_path, bin_dir, "bench", "ARGS=--metrics ssim nometric")
    assert done.returncode != 0 and "unknown metric(s) nometric" in done.stderr
    done = _make(tmp_path, bin_dir, "bench", "ARGS=--checkpoint static=missing.ckpt")
    assert done.returncode != 0 and "missing.ckpt" in done.stderr
    assert not (tmp_path / "data").exists()
    assert all("--check" in line for line in log.read_text().splitlines())


def test_check_options_validate_without_side_effects(tmp_path, capsys):
    from talkinghead.cli import main

    store = tmp_path / "store"
    assert main(["train", "--method", "pcavs", "--check", f"store={store}", f"out={tmp_path / 'run'}"]) == 0
    assert "settings ok" in capsys.readouterr().out
    assert main(["train", "--method", "pcavs", "--check", "--config", "nosuch"]) == 2
    assert "synth" in capsys.readouterr().err  # the configs there are
    assert main(["bench", "--check", "--dataset", "nosuch"]) == 2
    assert "choose from" in capsys.readouterr().err
    assert main(["bench", "--check", "--store", str(store), "--bench-root", str(tmp_path / "bench")]) == 0
    assert not store.exists() and not (tmp_path / "run").exists() and not (tmp_path / "bench").exists()
