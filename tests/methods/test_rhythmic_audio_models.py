"""Rhythmic Head's audio models: the head-motion learner Phi (official RotateAudio layout) and the
facial expression learner Psi, with their data helpers (frontal landmarks, PCA, noise, windows)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talkinghead.data import faces
from talkinghead.methods.rhythmic.expression import (
    SNR_LEVELS,
    ExpressionConfig,
    ExpressionLearner,
    LandmarkPCA,
    NoiseMixer,
    expression_losses,
    expression_mel_windows,
    expression_targets,
    fit_landmark_pca,
    frontalise_landmarks,
    mix_noise,
    most_frontal_index,
    pose_landmarks,
)
from talkinghead.methods.rhythmic.motion import (
    MOTION_COMPONENTS,
    OFFICIAL_RT_MEAN,
    HeadMotionConfig,
    HeadMotionLearner,
    MotionDiscriminator,
    load_official_motion,
    lr_factor,
    motion_audio_frames,
    motion_clip_inputs,
    motion_discriminator_losses,
    motion_keymap,
    motion_losses,
    motion_normaliser,
    official_motion_shapes,
    official_motion_state_dict,
    sample_window_lengths,
    smooth_sequence,
    training_window,
)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def random_poses(n: int, seed: int = 0, max_angle: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pose = np.zeros((n, 6))
    pose[:, :3] = rng.uniform(-max_angle, max_angle, (n, 3))
    pose[:, 3:5] = rng.uniform(90, 135, (n, 2))
    pose[:, 5] = rng.uniform(-0.2, 0.2, n)
    return pose


def random_official_checkpoint(config: HeadMotionConfig, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random tensors for every key / shape of the official RotateAudio modules at `config`'s sizes."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for component, shapes in official_motion_shapes(config).items():
        state = {}
        for key, shape in shapes.items():
            if key.endswith("num_batches_tracked"):
                state[key] = torch.tensor(7)
            elif key.endswith("running_var"):
                state[key] = torch.rand(shape, generator=g) + 0.5
            elif key.endswith("running_mean") or key.endswith("bias"):
                state[key] = torch.randn(shape, generator=g) * 0.1
            elif len(shape) == 1:  # BatchNorm weight
                state[key] = 1 + torch.randn(shape, generator=g) * 0.1
            else:
                fan_in = int(np.prod(shape[1:]))
                state[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
        out[component] = state
    return out


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, eps=1e-5)


def official_forward(ckpt, rt, audio, tau, n_conv=2, enc_layers=2, stride=2, motion_dim=6):
    """The recommended RotateAudio G pass in eval mode (SingleEmb -> split -> TemporalConv_no_LSTM ->
    L2LDecode), written functionally from the official module definitions, on raw tensors."""
    mid, enc, dec = ckpt["mid_net"], ckpt["encode"], ckpt["decode"]
    b, t, c, s = audio.shape
    x = audio.reshape(b * t, 1, c, s)
    for i in range(n_conv):
        if i:
            x = F.relu(x)
        x = F.conv2d(x, mid[f"conv.{2 * i}.weight"], mid[f"conv.{2 * i}.bias"])
    x = x.reshape(b, t, -1).transpose(1, 2)
    x = F.conv1d(x, mid["audio_l.0.weight"], mid["audio_l.0.bias"], padding=1)
    x = F.leaky_relu(_bn(x, mid, "audio_l.1"), 0.3)
    x = F.conv1d(x, mid["audio_l.4.weight"], mid["audio_l.4.bias"], padding=1)
    feat = F.leaky_relu(_bn(x, mid, "audio_l.5"), 0.3).transpose(1, 2)
    prev, drive = feat[:, :tau], feat[:, tau:]
    h = F.linear(rt.reshape(b * tau, -1), enc["l.0.weight"], enc["l.0.bias"])
    h = F.leaky_relu(_bn(h, enc, "l.1"), 0.3)
    h = F.linear(h, enc["l.3.weight"], enc["l.3.bias"]).reshape(b, tau, -1)
    h = torch.cat([h, prev], -1).transpose(1, 2)
    for i in range(enc_layers):
        h = F.conv1d(h, enc[f"backend_conv1.{4 * i}.weight"], enc[f"backend_conv1.{4 * i}.bias"], stride=stride)
        h = F.leaky_relu(_bn(h, enc, f"backend_conv1.{4 * i + 1}"), 0.3)
    h = h.mean(-1)
    out = F.linear(h, dec["l.weight"], dec["l.bias"])
    w, bias = out[:, :-motion_dim].reshape(b, -1, motion_dim), out[:, -motion_dim:]
    return torch.bmm(drive, w) + bias.unsqueeze(1)


class FakeStore:
    """The two `ClipStore` methods the fitting helpers use, over in-memory clips."""

    def __init__(self, clips: dict[str, dict[str, np.ndarray]]):
        self._clips = clips

    def clips(self, split=None):
        return list(self._clips)

    def load(self, entry, keys=None):
        return {k: self._clips[entry][k] for k in keys}

    def has(self, entry, key):
        return key in self._clips[entry]


# ---------------------------------------------------------------------------------------------
# head-motion learner
# ---------------------------------------------------------------------------------------------
def test_motion_shapes_and_extrapolation():
    cfg = HeadMotionConfig.tiny()
    model = HeadMotionLearner(cfg).eval()
    ref, ra, da = torch.randn(2, 16, 6), torch.randn(2, 16, 7, 640), torch.randn(2, 5, 7, 640)
    with torch.no_grad():
        assert model(ref, ra, da).shape == (2, 5, 6)
        assert model(ref, ra.unsqueeze(2), da.unsqueeze(2)).shape == (2, 5, 6)  # the official (B, T, 1, 7, 640)
        model.normaliser.set([0.1] * 6, [2.0] * 6)
        long = model.extrapolate(ref, ra, torch.randn(2, 37, 7, 640))
    assert long.shape == (2, 37, 6) and torch.isfinite(long).all()
    with pytest.raises(ValueError, match="13"):
        model(torch.randn(1, 12, 6), torch.randn(1, 12, 7, 640), da[:1])
    assert cfg.min_reference == 13 and HeadMotionConfig.paper().min_reference == 13
    assert HeadMotionConfig.from_dict(cfg.to_dict()) == cfg


def test_motion_audio_frames_follow_the_official_framing():
    cfg = HeadMotionConfig.tiny(audio_scale=1.0)
    wav = torch.arange(20 * 640, dtype=torch.float32)
    frames = motion_audio_frames(wav, 20, cfg, smooth=False)
    assert frames.shape == (20, 7, 640)
    for t in (0, 5, 19):
        assert frames[t, 3, 0] == t * 640  # the frame's own chunk in the middle: x_t-3 .. x_t+3
    assert torch.equal(frames[0, :3], wav[:3 * 640].reshape(3, 640))  # the first 3 chunks copied in front
    assert torch.equal(frames[10].reshape(-1), wav[7 * 640:14 * 640])
    assert torch.equal(frames[19, 4:], wav[-4 * 640:-640].reshape(3, 640))  # the last 4 appended
    batched = motion_audio_frames(torch.randn(2, 10 * 640) * 0.1, 12, HeadMotionConfig.paper())
    assert batched.shape == (2, 12, 7, 640)  # short audio zero-padded; smoothed; int16 scale


def test_smoothing_is_centred_and_keeps_constants():
    x = torch.zeros(31, 2)
    x[15] = 1.0
    y = smooth_sequence(x, 11)
    assert torch.allclose(y[:, 0], y[:, 0].flip(0)) and y[:, 0].argmax() == 15
    assert torch.allclose(smooth_sequence(torch.full((40, 3), 2.5), 21), torch.full((40, 3), 2.5))
    assert smooth_sequence(torch.randn(5, 6), 11).shape == (5, 6)  # window shrinks to the sequence


def test_normaliser_from_store_and_window_lengths():
    rng = np.random.default_rng(1)
    poses = {f"c{i}": {"pose": rng.normal(3.0, 2.0, (50, 6)).astype(np.float32)} for i in range(3)}
    norm = motion_normaliser(FakeStore(poses))
    all_p = np.concatenate([c["pose"] for c in poses.values()])
    assert np.allclose(norm.mean.numpy(), all_p.mean(0), atol=1e-5)
    assert np.allclose(norm.std.numpy(), all_p.std(0), atol=1e-5)
    z = norm.normalise(torch.as_tensor(all_p))
    assert torch.allclose(norm.denormalise(z), torch.as_tensor(all_p), atol=1e-5)
    model = HeadMotionLearner(HeadMotionConfig.tiny())
    model.normaliser.load_state_dict(norm.state_dict())
    assert "normaliser.mean" in model.state_dict()  # travels with the checkpoint
    cfg = HeadMotionConfig.paper()
    r = random.Random(0)
    for _ in range(20):
        past, future = sample_window_lengths(cfg, r)
        assert 32 <= past <= 96 and 16 <= future <= 96
        past, future = sample_window_lengths(cfg, r, available=60)
        assert past + future <= 60 and past >= 13 and future >= 1
    assert lr_factor(cfg, 4) == 1.0 and lr_factor(cfg, 9) == pytest.approx(0.5)


def test_training_window_and_store_clip_inputs():
    cfg = HeadMotionConfig.tiny()
    motion, audio = torch.randn(3, 40, 6), torch.randn(3, 40, 7, 640)
    ref, ref_audio, drive, target = training_window(motion, audio, [40, 30, 35], cfg, random.Random(0))
    past, future = ref.shape[1], target.shape[1]
    assert 16 <= past <= 24 and 8 <= future <= 16 and past + future <= 30
    assert ref_audio.shape[1] == past and drive.shape[1] == future
    start = int((motion[0, :, 0] == ref[0, 0, 0]).nonzero()[0])
    assert torch.equal(target, motion[:, start + past:start + past + future])
    rng = np.random.default_rng(0)
    store = FakeStore({"c": {"pose": rng.normal(size=(30, 6)).astype(np.float32),
                             "audio": rng.normal(0, 0.1, 30 * 640).astype(np.float32)}})
    pose, frames = motion_clip_inputs(store, "c", cfg)
    assert pose.shape == (30, 6) and frames.shape == (30, 7, 640)
    assert pose.std() < torch.as_tensor(store.load("c", ["pose"])["pose"]).std()  # smoothed


def test_paper_sizes_build_and_run_one_step():
    torch.manual_seed(0)
    motion = HeadMotionLearner(HeadMotionConfig.paper())
    pred = motion(torch.randn(2, 13, 6), torch.randn(2, 13, 7, 640), torch.randn(2, 3, 7, 640))
    motion_losses(pred, torch.randn(2, 3, 6))["total"].backward()
    assert pred.shape == (2, 3, 6) and motion.decode.l.weight.grad is not None
    expression = ExpressionLearner(ExpressionConfig.paper())
    out = expression(torch.rand(2, 3, 1, 80, 28), torch.randn(2, 6))
    expression_losses(out, torch.zeros_like(out))["total"].backward()
    assert out.shape == (2, 3, 6) and expression.lstm_fc.weight.grad is not None


def test_motion_discriminator_and_losses():
    cfg = HeadMotionConfig.tiny()
    disc = MotionDiscriminator(cfg)
    assert [k for k in disc.state_dict()] == ["l.0.weight", "l.0.bias"]  # official DT_Discriminator: Linear(24, 1)
    pred, target = torch.randn(3, 10, 6, requires_grad=True), torch.randn(3, 10, 6)
    losses = motion_losses(pred, target)
    assert set(losses) == {"mse", "total"} and torch.equal(losses["total"], losses["mse"])
    losses = motion_losses(pred, target, disc, adversarial_weight=0.5)
    assert torch.allclose(losses["total"], losses["mse"] + 0.5 * losses["adversarial"])
    d = motion_discriminator_losses(disc, target, pred)
    d["total"].backward()
    assert pred.grad is None and disc.l[0].weight.grad is not None  # the prediction is detached


def test_motion_learner_overfits_a_tiny_batch():
    torch.manual_seed(0)
    cfg = HeadMotionConfig.tiny()
    model = HeadMotionLearner(cfg)
    b, tau, fut = 2, 13, 8  # tau = min_reference: keeps the 100 steps at a few seconds on one core
    t = torch.arange(tau + fut, dtype=torch.float32)
    phase = torch.rand(b, 1, 6) * 6.28
    motion = torch.sin(t[None, :, None] * 0.3 + phase)
    audio = torch.randn(b, tau + fut, 7, 640)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        pred = model(motion[:, :tau], audio[:, :tau], audio[:, tau:])
        loss = motion_losses(pred, motion[:, tau:])["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])


def test_official_checkpoint_round_trip(tmp_path):
    cfg = HeadMotionConfig.tiny()
    ckpt = random_official_checkpoint(cfg)
    path = tmp_path / "best_model.pth.tar"
    torch.save({"encode": ckpt["encode"], "mid_net": ckpt["mid_net"],
                "decode": {f"module.{k}": v for k, v in ckpt["decode"].items()}}, path)  # DataParallel prefix too
    model = load_official_motion(path, cfg)
    assert not model.training
    assert torch.allclose(model.normaliser.mean, torch.tensor(OFFICIAL_RT_MEAN))
    torch.manual_seed(1)
    rt, audio = torch.randn(2, 20, 6), torch.randn(2, 29, 7, 640)
    with torch.no_grad():
        ours = model(rt, audio[:, :20], audio[:, 20:])
        theirs = official_forward(ckpt, rt, audio, 20)
    assert ours.shape == (2, 9, 6)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    back = official_motion_state_dict(model)
    assert set(back) == set(MOTION_COMPONENTS)
    for component in MOTION_COMPONENTS:
        for key, value in ckpt[component].items():
            assert torch.equal(back[component][key], value), (component, key)


def test_official_key_map_covers_the_paper_layout():
    shapes = official_motion_shapes()
    assert shapes["mid_net"]["audio_l.0.weight"] == (512, 30528, 3)
    assert shapes["mid_net"]["conv.2.weight"] == (16, 8, 3, 3)
    assert shapes["encode"]["l.0.weight"] == (128, 6) and shapes["encode"]["l.3.weight"] == (256, 128)
    assert shapes["encode"]["backend_conv1.4.weight"] == (512, 512, 5)
    assert shapes["decode"]["l.weight"] == (256 * 6 + 6, 512)
    report = motion_keymap().check(HeadMotionLearner(HeadMotionConfig.paper()), shapes)
    assert report == {"unmapped": [], "missing": [], "mismatched": [], "uncovered": []}


def test_bad_official_files_name_themselves(tmp_path):
    cfg = HeadMotionConfig.tiny()
    missing = tmp_path / "nothing.pth"
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_official_motion(missing, cfg)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_official_motion(garbage, cfg)
    partial = tmp_path / "partial.pth"
    ckpt = random_official_checkpoint(cfg)
    torch.save({"encode": ckpt["encode"], "mid_net": ckpt["mid_net"]}, partial)
    with pytest.raises(ValueError, match="partial.pth.*decode"):
        load_official_motion(partial, cfg)
    wrong = tmp_path / "other_options.pth"
    torch.save(random_official_checkpoint(HeadMotionConfig.tiny(audio_dim=8)), wrong)
    with pytest.raises(ValueError, match="other_options.pth"):
        load_official_motion(wrong, cfg)
    extra = tmp_path / "extra_keys.pth"
    ckpt["decode"]["lstm.weight_ih_l0"] = torch.zeros(3)
    torch.save(ckpt, extra)
    with pytest.raises(ValueError, match="extra_keys.pth"):
        load_official_motion(extra, cfg)


# ---------------------------------------------------------------------------------------------
# expression learner
# ---------------------------------------------------------------------------------------------
def test_frontalise_and_pose_landmarks_round_trip():
    template = faces.face_template()
    poses = random_poses(24, seed=2)
    rng = np.random.default_rng(3)
    image = np.stack([faces.project(template, p, faces.POSE_REFERENCE_IOD) for p in poses])
    frontal = frontalise_landmarks(image, poses)
    assert frontal.shape == (24, 68, 2)
    assert np.abs(frontal - template[None, :, :2]).max() < 1e-5  # canonical units
    assert np.abs(pose_landmarks(frontal, poses) - image).max() < 1e-3  # pixels
    # an expression (mouth open, brows up) survives the round trip in both directions
    expressive = template[None, :, :2] + rng.normal(0, 0.03, (24, 68, 2))
    posed = pose_landmarks(expressive, poses)
    assert np.abs(frontalise_landmarks(posed, poses) - expressive).max() < 1e-4
    assert np.abs(pose_landmarks(frontalise_landmarks(posed, poses), poses) - posed).max() < 1e-3
    assert pose_landmarks(expressive[0], poses[0]).shape == (68, 2)
    # with the store's own pose estimate (the rigid fit of faces.estimate_head_pose)
    est = faces.estimate_head_pose(image.astype(np.float32))
    assert np.abs(frontalise_landmarks(image, est) - template[None, :, :2]).max() < 1e-3
    profile = poses[:1].copy()
    profile[0, :3] = [0.0, 1.57, 0.0]
    with pytest.raises(ValueError, match="turned too far"):
        frontalise_landmarks(image[:1], profile)


def test_most_frontal_index():
    poses = random_poses(10, seed=4)
    poses[:, 1] = np.where(poses[:, 1] < 0, -0.3, 0.3)  # every frame turned by >= 0.3 rad ...
    poses[6, :3] = [0.01, -0.02, 0.0]  # ... but this one
    assert most_frontal_index(poses) == 6
    assert most_frontal_index(torch.as_tensor(poses)) == 6


def test_landmark_pca_error_falls_with_components_and_vanishes_at_full_rank():
    rng = np.random.default_rng(5)
    basis = rng.normal(size=(20, 136))
    data = (rng.normal(size=(300, 20)) * np.linspace(3, 0.1, 20)) @ basis + rng.normal(0, 0.01, (300, 136))
    errors = [LandmarkPCA(k).fit(data).reconstruction_error(data).item() for k in (1, 3, 6, 12, 20, 60)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    full = LandmarkPCA(136).fit(data)
    assert full.reconstruction_error(data).item() < 1e-5
    x = torch.as_tensor(data[:4], dtype=torch.float32).reshape(4, 68, 2)
    assert torch.allclose(full.inverse(full.transform(x)), x, atol=1e-4)
    comps = full.components
    assert torch.allclose(comps @ comps.t(), torch.eye(136), atol=1e-4)
    assert (full.variance[:-1] >= full.variance[1:]).all()
    restored = LandmarkPCA(136)
    restored.load_state_dict(full.state_dict())  # the basis travels as buffers
    assert bool(restored.fitted) and torch.equal(restored.components, full.components)
    with pytest.raises(ValueError, match="components"):
        LandmarkPCA(50).fit(data[:10])


def test_fit_landmark_pca_from_store():
    template = faces.face_template()
    rng = np.random.default_rng(6)
    clips = {}
    for i in range(3):
        poses = random_poses(30, seed=10 + i)
        frontal = template[None, :, :2] + rng.normal(0, 0.02, (30, 68, 2))
        clips[f"c{i}"] = {"landmarks": pose_landmarks(frontal, poses), "pose": poses.astype(np.float32),
                          "landmarks_found": np.ones(30, bool)}
    pca = fit_landmark_pca(FakeStore(clips), n_components=6)
    assert bool(pca.fitted)
    assert torch.allclose(pca.mean.reshape(68, 2), torch.as_tensor(template[:, :2]), atol=0.02)


def test_mix_noise_hits_the_snr():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    speech = 0.3 * torch.sin(2 * np.pi * 220 * t) * (1 + torch.sin(2 * np.pi * 3 * t))
    noise_file = torch.randn(5000, generator=g) * 0.05  # shorter than the audio: tiled
    for snr in SNR_LEVELS:
        for noise in (None, noise_file, torch.randn(40000, generator=g)):
            out = mix_noise(speech, snr, noise, generator=g)
            got = 10 * torch.log10(speech.double().pow(2).mean() / (out.double() - speech.double()).pow(2).mean())
            assert abs(got.item() - snr) < 0.1, (snr, got)
    batch = mix_noise(torch.stack([speech, speech * 0.1]), torch.tensor([6.0, 30.0]), generator=g)
    assert batch.shape == (2, 16000)
    assert torch.equal(mix_noise(torch.zeros(100), 10.0), torch.zeros(100))  # silence stays silent
    assert SNR_LEVELS == (6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0, 27.0, 30.0)


def test_noise_mixer_samples_the_paper_levels():
    mixer = ExpressionConfig.tiny().noise_mixer(noises=[np.random.default_rng(0).normal(size=3000)], seed=3)
    wav = torch.randn(6, 8000) * 0.1
    noisy, snr = mixer(wav)
    assert noisy.shape == wav.shape and not torch.equal(noisy, wav)
    assert set(snr.tolist()) <= set(SNR_LEVELS)
    levels = mixer.sample_snr(500)
    assert set(levels.tolist()) == set(SNR_LEVELS)
    off, snr_off = NoiseMixer(probability=0.0, seed=0)(wav)
    assert torch.equal(off, wav) and torch.isnan(snr_off).all()


def test_expression_mel_windows_cover_seven_frames():
    mel = torch.arange(100, dtype=torch.float32).expand(80, 100)  # value = mel frame index
    win = expression_mel_windows(mel, 25)
    assert win.shape == (25, 1, 80, 28)
    assert win[10, 0, 0, 0] == (10 - 3) * 4 and win[10, 0, 0, -1] == (10 + 4) * 4 - 1
    assert win[0, 0, 0, 0] == 0  # edge repeated
    assert expression_mel_windows(mel.expand(2, 80, 100), 5).shape == (2, 5, 1, 80, 28)


def test_expression_learner_shapes_targets_and_losses():
    torch.manual_seed(0)
    cfg = ExpressionConfig.tiny()
    model = ExpressionLearner(cfg)
    rng = np.random.default_rng(7)
    frontal = torch.as_tensor(faces.face_template()[None, None, :, :2] + rng.normal(0, 0.02, (2, 10, 68, 2)),
                              dtype=torch.float32)
    model.set_pca(LandmarkPCA(cfg.n_components).fit(frontal.reshape(-1, 68, 2)))
    identity, target = expression_targets(frontal, [3, 0], model.pca)
    assert identity.shape == (2, 6) and target.shape == (2, 10, 6)
    assert torch.allclose(target[0, 3], torch.zeros(6), atol=1e-6)
    mel = torch.rand(2, 10, 1, 80, 28)
    pred = model(mel, identity)
    assert pred.shape == (2, 10, 6)
    losses = expression_losses(pred, target, model.pca, landmark_weight=1.0)
    assert set(losses) == {"pca", "landmark", "total"}
    losses["total"].backward()
    with torch.no_grad():
        lm = model.predict_landmarks(mel, frontal[:, 3])
        expected = frontal[:, 3, None] + model.pca.delta(model(mel, model.pca.transform(frontal[:, 3])))
    assert lm.shape == (2, 10, 68, 2) and torch.allclose(lm, expected, atol=1e-6)  # identity added back
    mlp = ExpressionLearner(ExpressionConfig.tiny(lstm_layers=0))
    assert mlp(mel, identity).shape == (2, 10, 6)
    assert ExpressionConfig.from_dict(cfg.to_dict()) == cfg
    assert ExpressionConfig.paper().audio_map == (5, 7)
