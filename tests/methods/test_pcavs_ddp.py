"""DDP is Trainer configuration: the full (GAN) stage trains a few steps with strategy="ddp" over two
CPU processes (gloo); the ranks see different samples and end with identical weights.

Lightning's "ddp" strategy starts the other rank by re-running the launching command, so the run is
the real entry point in a subprocess (``python -m talkinghead.methods.pcavs.train``), not pytest.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_ddp_two_cpu_processes(synth_vox2_store, tmp_path):
    out = tmp_path / "run"
    config = {
        "name": "ddp-test", "seed": 0, "store": str(synth_vox2_store), "out": str(out), "stages": ["full"],
        "model": {"preset": "tiny", "image_size": 32, "identity": {"num_identities": None},
                  "nonidentity": {"num_identities": None}, "audio": {"num_identities": None}},
        "data": {"window": 2, "num_references": 1, "num_negatives": 0, "num_shifted": 0, "augment": "pcavs",
                 "num_workers": 0},
        "trainer": {"accelerator": "cpu", "devices": 2, "num_nodes": 1, "strategy": "ddp", "num_threads": 1,
                    "log_every_n_steps": 1, "wandb": False, "progress": False},
        "full": {"batch_size": 2, "max_steps": 3, "epoch_batches": 3, "max_minutes": None, "sample_every_n_steps": 0,
                 "optim": {"lr": 1e-3, "betas": [0.5, 0.99], "ttur": False, "amsgrad": False},
                 "loss": {"l1": 10.0, "temperature": 0.1}},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)
    result = subprocess.run([sys.executable, "-m", "talkinghead.methods.pcavs.train", "--config", str(path),
                             "--record", "--no-progress"], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads((out / "full" / "record" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert [r["global_step"] for r in records] == [6, 6]  # 3 batches x (G step + D step) on each rank
    assert all(len(b["samples"]) == 2 for r in records for b in r["batches"])
    seen = [{s for b in r["batches"] for s in b["samples"]} for r in records]  # digests of the augmented frames
    assert len(seen[0]) == len(seen[1]) == 6
    assert seen[0].isdisjoint(seen[1])  # each rank drew its own samples
    assert records[0]["params_sha256"] == records[1]["params_sha256"]  # gradients were averaged
    assert (out / "full" / "checkpoints" / "last.ckpt").is_file()
