"""benchmarks/rhythmic_probes.py: the mouth-luminance measure, and the script end to end on a tiny store,
model and SyncNet expert; benchmarks/head_motion_probe.py end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

TINY_SYNCNET = {"audio_channels": [8, 16, 16, 16, 16, 32], "lip_channels": [8, 16, 16, 16, 16, 32], "fc_hidden": 32,
                "embedding": 16, "image_size": [64, 96], "crop": [0.375, 0.8125, 0.1875, 0.8125]}


def test_inner_mouth_luminance_reads_the_inner_lip_polygon(benchmark_script):
    probes = benchmark_script("rhythmic_probes")
    landmarks = np.zeros((2, 68, 2))
    ring = np.array([[10, 14], [12, 12], [16, 12], [18, 14], [16, 17], [12, 17], [10, 14], [10, 14]], float)
    landmarks[:, 60:68] = ring
    frames = torch.ones(2, 3, 32, 32)
    frames[1, :, 12:18, 10:19] = 0.2  # a dark open mouth in frame 1
    values = probes.inner_mouth_luminance(frames, landmarks)
    assert values[0] == 1.0 and values[1] < 0.25


@pytest.fixture(scope="module")
def untrained_checkpoint(synth_vox2_store, tmp_path_factory):
    """A joint-stage checkpoint of an untrained tiny Rhythmic Head (Psi's PCA and Phi's normaliser fitted
    on the store)."""
    from lightning.pytorch import Trainer

    from talkinghead.methods.rhythmic.composer import ComposerConfig
    from talkinghead.methods.rhythmic.module import RhythmicModule
    from talkinghead.methods.rhythmic.networks import RhythmicConfig

    torch.manual_seed(0)
    composer = ComposerConfig.tiny(image_size=32, n_shot=2, n_downsample_G=2, n_adaptive_layers=1)
    config = RhythmicConfig.tiny(image_size=32, tau=16, num_references=2, composer=composer)
    module = RhythmicModule(stage="joint", model=config.to_dict(), store=str(synth_vox2_store))
    module.fit_statistics()
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, max_steps=0)
    trainer.strategy.connect(module)
    ckpt = tmp_path_factory.mktemp("rhythmic-untrained") / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def test_script_prints_every_column_for_every_clip(synth_vox2_store, untrained_checkpoint, tmp_path, capsys,
                                                   benchmark_script):
    from talkinghead.metrics.syncnet_expert import save_expert
    from talkinghead.nn.syncnet import SyncNet, SyncNetConfig

    ckpt = untrained_checkpoint
    expert = save_expert(tmp_path / "expert.pt", SyncNet(SyncNetConfig.from_dict(TINY_SYNCNET)).eval(), "tiny", 1,
                         synth_vox2_store)
    probes = benchmark_script("rhythmic_probes")
    assert probes.main([str(ckpt), "--store", str(synth_vox2_store), "--expert", str(expert)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| id") or line.startswith("| **mean**")]
    assert len(rows) == 2  # the one test clip and the mean
    values = [float(v.strip("*")) for v in rows[0].strip("| ").split(" | ")[1:]]
    assert len(values) == len(probes.COLUMNS) and all(np.isfinite(values))
    # an untrained generator is farther from the real frames than the copied matched reference
    columns = dict(zip(probes.COLUMNS, values))
    assert columns["L1 gen"] > columns["L1 copy"] > 0


def test_head_motion_probe_scores_phi_beside_the_pose_level_baselines(synth_vox2_store, untrained_checkpoint,
                                                                      capsys, benchmark_script):
    probe = benchmark_script("head_motion_probe")
    assert probe.main([str(untrained_checkpoint), "--store", str(synth_vox2_store), "--clips", "2"]) == 0
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ")[1:]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(probe.ROWS) | {"real"} <= set(rows)
    values = {row: [float(v) for v in rows[row]] for row in probe.ROWS}
    speed = {row: v[-1] for row, v in values.items()}
    real_speed = float(rows["real"][-1])
    assert speed["static"] == 0.0 and real_speed > 0
    # a still head misses the real mean speed by all of it; every score of every row is finite
    assert abs(values["static"][probe.COLUMNS.index("HM-speed")] - real_speed) < 0.01
    assert all(np.isfinite(v).all() for v in values.values())
