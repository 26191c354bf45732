"""LSE-C / LSE-D / NLSE-C: known answers, agreement with a per-window loop, the registered metric."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talkinghead.data.audio import mfcc
from talkinghead.metrics import METRICS, build_metric, metric_names
from talkinghead.metrics.lse import LSE, nlse_c, real_confidence, sync_scores
from talkinghead.nn.syncnet import SyncNet, SyncNetConfig, audio_features

SMALL = SyncNetConfig(audio_channels=(8, 16, 16, 16, 16, 32), lip_channels=(8, 16, 16, 16, 16, 32), fc_hidden=32,
                      embedding=16, image_size=(64, 64))


def random_net(seed: int = 0) -> SyncNet:
    torch.manual_seed(seed)
    net = SyncNet(SMALL)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def random_clip(frames: int = 40, seed: int = 0, size: int = 64):
    gen = torch.Generator().manual_seed(seed)
    video = torch.rand(frames, 3, size, size, generator=gen)
    audio = (0.2 * torch.randn(frames * 640 + 123, generator=gen)).clamp(-1, 1)
    return video, audio


# ---------------------------------------------------------------------------------------------
# known answers with a transparent "net"
# ---------------------------------------------------------------------------------------------
class LoudBrightNet(torch.nn.Module):
    """Embeds a lip window as its 5 frame brightnesses and an audio window as the loudness (MFCC c0)
    of its 5 video-frame slots, both scaled to about +-1: in-sync pairs coincide."""

    config = SyncNetConfig(image_size=(64, 64))

    def __init__(self, c0_mid: float, c0_half: float):
        super().__init__()
        self.c0_mid, self.c0_half = c0_mid, c0_half

    def forward_lip(self, x):  # (N, 3, 5, h, w) BGR 0-255
        return (x.mean(dim=(1, 3, 4)) - 125.0) / 75.0

    def forward_aud(self, m):  # (N, 1, 13, 20)
        return (m[:, 0, 0, :].reshape(-1, 5, 4).mean(-1) - self.c0_mid) / self.c0_half


def pattern_clip(frames: int = 60, seed: int = 3):
    """Frames bright / dark and audio loud / quiet following the same random +-1 pattern."""
    rng = np.random.default_rng(seed)
    s = rng.choice([-1.0, 1.0], size=frames)
    video = torch.from_numpy(np.repeat((125.0 + 75.0 * s)[:, None, None, None] / 255.0, 3, axis=1))
    video = video.expand(frames, 3, 64, 64).float()
    sigma = np.repeat(np.where(s > 0, 0.3, 0.03), 640)
    audio = torch.from_numpy(np.clip(rng.normal(0.0, 1.0, frames * 640) * sigma, -1, 1).astype(np.float32))
    return video, audio


def calibrated_net() -> LoudBrightNet:
    rng = np.random.default_rng(0)
    loud = audio_features(torch.from_numpy((rng.normal(0, 0.3, 16000)).astype(np.float32)))[:, 0].mean()
    quiet = audio_features(torch.from_numpy((rng.normal(0, 0.03, 16000)).astype(np.float32)))[:, 0].mean()
    return LoudBrightNet(float(loud + quiet) / 2, float(loud - quiet) / 2)


@pytest.mark.parametrize("planted", [-4, -1, 0, 2, 5])
def test_planted_offset_is_recovered_with_sign_convention(planted):
    net = calibrated_net()
    video, audio = pattern_clip()
    # planted > 0: the audio leads the video by `planted` frames (drop its first frames of audio)
    if planted > 0:
        audio = audio[planted * 640:]
    elif planted < 0:
        video = video[-planted:]
    scores = sync_scores(net, video, audio)
    assert scores.offset == planted
    assert scores.num_windows == min(len(video), len(audio) // 640) - 5
    assert scores.distances.shape == (31,)
    assert scores.min_distance == pytest.approx(float(scores.distances.min()))
    assert scores.confidence == pytest.approx(float(scores.distances.median() - scores.distances.min()))
    assert scores.confidence > 1.0  # in sync: clearly below the typical (random-pattern) distance


def test_shuffled_pattern_has_low_confidence():
    net = calibrated_net()
    video, _ = pattern_clip(seed=3)
    _, other = pattern_clip(seed=4)
    synced = sync_scores(net, *pattern_clip(seed=3))
    shuffled = sync_scores(net, video, other)
    assert synced.confidence > 2 * shuffled.confidence
    assert synced.min_distance < shuffled.min_distance


# ---------------------------------------------------------------------------------------------
# batched == the reference's per-window loop
# ---------------------------------------------------------------------------------------------
def per_window_reference(net: SyncNet, frames: torch.Tensor, audio: torch.Tensor, vshift: int = 15):
    """The reference evaluation written plainly: one window at a time, offsets in a Python loop."""
    bgr = (frames.clamp(0, 1) * 255.0).round()[:, [2, 1, 0]]  # (T, 3, H, W) BGR 0-255
    pcm = np.clip(np.round(audio.double().numpy() * 32768.0), -32768, 32767).astype(np.int16)
    cc = mfcc(torch.from_numpy(pcm)).T  # (13, M)
    last = min(len(frames), len(audio) // 640) - 5
    with torch.no_grad():
        im_feat = torch.cat([net.forward_lip(bgr[v:v + 5].permute(1, 0, 2, 3)[None]) for v in range(last)])
        cc_feat = torch.cat([net.forward_aud(cc[None, None, :, 4 * v:4 * v + 20]) for v in range(last)])
    padded = F.pad(cc_feat, (0, 0, vshift, vshift))
    dists = [F.pairwise_distance(im_feat[[i]].repeat(2 * vshift + 1, 1), padded[i:i + 2 * vshift + 1])
             for i in range(last)]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    return int(vshift - minidx), float(torch.median(mdist) - minval), float(minval), mdist


@pytest.mark.parametrize("batch_size", [7, 64])
def test_batched_scores_equal_the_per_window_loop(batch_size):
    net = random_net(1)
    video, audio = random_clip(frames=40, seed=2)
    offset, conf, minval, mdist = per_window_reference(net, video, audio)
    scores = sync_scores(net, video, audio, batch_size=batch_size)
    assert scores.offset == offset
    assert scores.num_windows == 35
    torch.testing.assert_close(scores.distances, mdist, rtol=1e-4, atol=1e-4)
    assert scores.confidence == pytest.approx(conf, abs=1e-4)
    assert scores.min_distance == pytest.approx(minval, abs=1e-4)


def test_sync_scores_rejects_bad_input():
    net = random_net()
    video, audio = random_clip(frames=8)
    with pytest.raises(ValueError, match="too short"):
        sync_scores(net, video[:5], audio)
    with pytest.raises(ValueError, match="too short"):
        sync_scores(net, video, audio[: 5 * 640])
    with pytest.raises(ValueError, match="mono"):
        sync_scores(net, video, torch.stack([audio, audio]))
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        sync_scores(net, video[0], audio)


# ---------------------------------------------------------------------------------------------
# the registered metric
# ---------------------------------------------------------------------------------------------
def test_nlse_c_formula():
    assert float(nlse_c(7.26, 7.35)) == pytest.approx((7.26 - 7.35) / 7.35)
    assert float(nlse_c(8.21, 7.35)) == pytest.approx(0.117, abs=1e-3)  # PC-AVS in PD-FGC's table
    with pytest.raises(ValueError):
        nlse_c(1.0, 0.0)


def test_lse_metric_means_columns_and_name():
    assert "lse" in metric_names() and METRICS["lse"] is LSE
    net = random_net(2)
    clips = [random_clip(frames=30, seed=s) for s in (5, 6)]
    expected = [sync_scores(net, v, a) for v, a in clips]
    real = 2.5
    metric = build_metric("lse", syncnet=net, syncnet_name="test net", real_confidence=real)
    assert isinstance(metric, LSE)
    assert metric.inputs == ("fake", "audio")
    assert metric.columns == {"LSE-C": True, "LSE-D": False, "NLSE-C": False}
    assert metric.syncnet_name == "test net"
    for v, a in clips:
        metric.update(fake=v, audio=a)
    out = metric.compute()
    conf = np.mean([s.confidence for s in expected])
    assert float(out["LSE-C"]) == pytest.approx(conf, rel=1e-5)
    assert float(out["LSE-D"]) == pytest.approx(np.mean([s.min_distance for s in expected]), rel=1e-5)
    assert float(out["NLSE-C"]) == pytest.approx((conf - real) / real, rel=1e-4)
    plain = LSE(net, "test net")
    assert plain.columns == {"LSE-C": True, "LSE-D": False}
    assert not any("_fused" in k for k in metric.state_dict())  # the fused copy is a cache only


def test_lse_metric_sees_weight_updates():
    net = random_net(3)
    video, audio = random_clip(frames=30, seed=7)
    metric = LSE(net, "changing net")
    metric.update(video, audio)
    before = float(metric.compute()["LSE-D"])
    with torch.no_grad():
        net.netfclip[3].weight.mul_(2.0)
    metric.reset()
    metric.update(video, audio)
    assert float(metric.compute()["LSE-D"]) != pytest.approx(before)


def test_lse_metric_errors(monkeypatch, tmp_path):
    from talkinghead.weights import MissingWeightsError

    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="syncnet_v2.model"):
        LSE()
    with pytest.raises(ValueError, match="syncnet_name"):
        LSE(random_net())
    with pytest.raises(ValueError, match="non-zero"):
        LSE(random_net(), "x", real_confidence=0.0)


def test_real_confidence_and_from_expert(synth_vox2_store, tmp_path):
    from talkinghead.data.store import ClipStore
    from talkinghead.metrics.syncnet_expert import save_expert

    net = random_net(4)
    store = ClipStore(synth_vox2_store)
    entry = store.clips("train")[0]
    frames = torch.from_numpy(store.load_frames(entry, range(int(entry["num_frames"]))))
    audio = torch.from_numpy(store.load(entry, ["audio"])["audio"])
    value = real_confidence(net, synth_vox2_store, split="train", limit=1)
    assert value == pytest.approx(sync_scores(net, frames, audio).confidence)
    path = save_expert(tmp_path / "expert.pt", net, "small", 7, synth_vox2_store)
    metric = LSE.from_expert(path, real_confidence=value)
    assert metric.syncnet_name.startswith("SyncNet expert (small") and "step 7" in metric.syncnet_name
    metric.update(frames.permute(0, 3, 1, 2).float() / 255.0, audio)
    assert float(metric.compute()["NLSE-C"]) == pytest.approx(0.0, abs=1e-5)
