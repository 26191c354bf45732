"""benchmarks/pdfgc_probes.py: the ridge probe, and the script end to end on a tiny store and model."""
from __future__ import annotations

import numpy as np
import torch

from talkinghead.methods.pdfgc.networks import PDFGC, PDFGCConfig


def test_probe_reads_a_linear_factor_and_not_an_unrelated_one(benchmark_script):
    probes = benchmark_script("pdfgc_probes")
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(400, 12)) * 5.0 + 3.0, rng.normal(size=(200, 12)) * 5.0 + 3.0
    w = rng.normal(size=12)

    def targets(x: np.ndarray) -> np.ndarray:  # a linear factor, and one independent of x
        return np.c_[x @ w + rng.normal(size=len(x)) * 0.5, rng.normal(size=len(x))]

    r = probes.probe(x_train, targets(x_train), x_test, targets(x_test))
    assert r[0] > 0.95 and abs(r[1]) < 0.2
    # a constant feature reads nothing (and does not divide by zero)
    assert np.allclose(probes.probe(np.ones((50, 3)), targets(np.ones((50, 12)))[:, :1], np.ones((20, 3)),
                                   targets(np.ones((20, 12)))[:, :1]), 0.0)


def test_script_prints_every_probe_and_the_generator_sensitivity(synth_vox2_store, tmp_path, capsys, benchmark_script):
    torch.manual_seed(0)
    config = PDFGCConfig.tiny(image_size=32, num_identities=3)
    ckpt = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in PDFGC(config).state_dict().items()}
    torch.save({"hyper_parameters": {"model": config.to_dict(), "stage": "expression"}, "state_dict": state}, ckpt)
    assert benchmark_script("pdfgc_probes").main([str(ckpt), "--store", str(synth_vox2_store), "--step", "8"]) == 0
    out = capsys.readouterr().out
    for name in ("F_n", "lip code", "eye code", "pose code", "emotion code"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        values = [float(v) for v in row.strip("| ").split(" | ")[2:-1]]  # the probes; the last column: the share
        assert len(values) == 10 and all(-1.0 <= v <= 1.0 for v in values)
    share = float(next(line for line in out.splitlines() if line.startswith("| F_n |")).strip("| ").split(" | ")[-1])
    assert 0.0 <= share <= 1.0 and "within-clip share of the true factors: blink" in out
    changes = out.split("another clip: ")[1]
    assert all(f"{code} " in changes for code in ("lip", "emotion", "eye", "pose"))
    assert "blinks drawn by G (" in out


def test_script_probes_a_motion_stage_g0(synth_vox2_store, tmp_path, capsys, benchmark_script):
    from talkinghead.methods.pdfgc.networks import build_stage1_generator

    torch.manual_seed(0)
    config = PDFGCConfig.tiny(image_size=32, num_identities=3)
    g0 = build_stage1_generator(config)
    state = {f"model.{k}": v for k, v in PDFGC(config).state_dict().items()}
    state.update({f"net_generator0.{k}": v for k, v in g0.state_dict().items()})
    ckpt = tmp_path / "motion.ckpt"
    torch.save({"hyper_parameters": {"model": config.to_dict(), "stage": "motion"}, "state_dict": state}, ckpt)
    probes = benchmark_script("pdfgc_probes")
    assert probes.stage1_generator(str(ckpt), PDFGC(config)) is not None
    assert probes.main([str(ckpt), "--store", str(synth_vox2_store), "--step", "8"]) == 0
    out = capsys.readouterr().out
    assert "blinks drawn by G_0 (" in out and "another clip" not in out  # no final G in the motion stage
    assert next(line for line in out.splitlines() if line.startswith("| unified code | "))  # G_0's code: its share
    follow = out.split("motion followed by G_0 (")[1]
    assert -1.0 <= float(follow.split("change in the clip) ")[1].split()[0]) <= 1.0


def test_eye_box_brightness_reads_the_eyes_between_the_corners(benchmark_script):
    probes = benchmark_script("pdfgc_probes")
    lm = np.zeros((2, 68, 2))
    lm[:, [36, 39, 42, 45]] = [[60.0, 100.0], [100.0, 100.0], [124.0, 100.0], [164.0, 100.0]]  # 224-px frames
    images = -torch.ones(2, 3, 56, 56)
    images[1, :, 22:28, 15:25] = 1.0  # a light patch over the left eye's box only (x 15-25, y 21.5-28.5 at 56 px)
    images[:, :, 40:, :] = 1.0  # below both boxes: not read
    level = probes.eye_box_brightness(images, lm)
    assert level[0] == -1.0 and -1.0 < level[1] < 0.0  # the left box lightened, the right one not: mean of both


def test_change_correlation_is_zero_for_an_ignored_code_and_one_for_the_clip_s_motion(benchmark_script):
    probes = benchmark_script("pdfgc_probes")
    torch.manual_seed(0)
    real = torch.rand(4, 3, 8, 8) * 2 - 1
    fixed = torch.rand(4, 3, 8, 8) * 2 - 1  # any drawing of the first frame's code
    assert probes.change_correlation(fixed, fixed, real) == 0.0  # the code changes nothing
    assert abs(probes.change_correlation(fixed + (real - real[:1]), fixed, real) - 1.0) < 1e-9
    assert abs(probes.change_correlation(fixed - 0.5 * (real - real[:1]), fixed, real) + 1.0) < 1e-9
    noise = torch.rand(4, 3, 8, 8)
    assert abs(probes.change_correlation(fixed + noise, fixed, real)) < 0.3  # unrelated changes


def test_within_clip_share_tells_codes_that_follow_frames_from_codes_that_tell_clips_apart(benchmark_script):
    probes = benchmark_script("pdfgc_probes")
    rng = np.random.default_rng(0)
    clip = np.repeat(np.arange(6), 20)
    per_clip = rng.normal(size=(6, 4))[clip] * 3.0  # constant within a clip
    per_frame = rng.normal(size=(120, 4))  # new every frame
    assert probes.within_clip_share(per_clip, clip) < 1e-12
    assert probes.within_clip_share(per_frame, clip) > 0.9
    assert 0.05 < probes.within_clip_share(per_clip + per_frame, clip) < 0.3  # mostly the clip's: 1 / (1 + 9)
    assert probes.within_clip_share(np.ones((120, 4)), clip) == 0.0
