"""Rhythmic Head training (`talkinghead.methods.rhythmic.module` / `networks` / `method`): every stage
runs on batches of the real data module over a tiny SynthTalk store, trains exactly its parts and leaves
the rest bit-identical; the PCA basis and the motion normaliser are fitted when their stage starts and
travel in checkpoints into later stages; losses match their formulas; the per-frame composer inputs,
the audio reassembly and the pose rescaling are exact where they can be."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer

from talkinghead.data import faces
from talkinghead.methods.rhythmic.method import METHOD, build_data, build_module
from talkinghead.methods.rhythmic.module import RhythmicModule, continuous_audio, face_mask
from talkinghead.nn.losses import masked_l1
from talkinghead.methods.rhythmic.networks import (
    Rhythmic,
    RhythmicConfig,
    composer_inputs,
    frontal_landmarks,
    image_landmarks,
    normaliser_fitted,
    rescale_pose,
)
from talkinghead.methods.rhythmic.render import motion_distances
from talkinghead.nn.losses import hinge_gan_loss


@pytest.fixture(scope="module")
def tiny_cfg(synth_vox2_store):
    return METHOD.load_config("tiny", [f"store={synth_vox2_store}"])


def first_batch(cfg, stage: str) -> dict:
    data = build_data(cfg, stage, 1)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def fit(module, cfg, stage: str, steps: int = 2) -> Trainer:
    torch.set_num_threads(1)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps * module.optimizers_per_step, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=build_data(cfg, stage, 1))
    return trainer


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module, prefix: str) -> bool:
    after = module.state_dict()
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


def identical(before: dict, module, prefix: str) -> bool:
    after = module.state_dict()
    return all(torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


# ------------------------------------------------------------------------- configs and geometry
def test_config_round_trip_and_top_level_sizes():
    for cfg in (RhythmicConfig.paper(), RhythmicConfig.tiny(), RhythmicConfig.tiny(image_size=32, tau=13)):
        assert RhythmicConfig.from_dict(cfg.to_dict()) == cfg
    paper = RhythmicConfig.paper()
    assert (paper.image_size, paper.tau, paper.num_references, paper.composer.n_shot) == (256, 64, 8, 8)
    cfg = RhythmicConfig.from_dict({**RhythmicConfig.tiny().to_dict(), "image_size": 32, "num_references": 4,
                                    "pca_components": 5})
    assert cfg.composer.image_size == 32 and cfg.composer.n_shot == 4 and cfg.expression.n_components == 5
    with pytest.raises(ValueError, match="min_reference"):
        RhythmicConfig.tiny(tau=8)
    with pytest.raises(ValueError, match="in_channels"):
        RhythmicConfig.tiny(discriminator={"in_channels": 3})


def test_pose_rescaling_and_landmark_round_trip():
    template = faces.face_template()
    pose = np.array([0.1, -0.2, 0.05, 100.0, 120.0, 0.1])
    lm224 = faces.project(template, pose, faces.POSE_REFERENCE_IOD)
    size = 64
    lm64 = (lm224 + 0.5) * size / 224 - 0.5
    assert np.allclose(faces.project(template, rescale_pose(pose, size), faces.POSE_REFERENCE_IOD), lm64, atol=1e-9)
    poses = torch.tensor(np.stack([pose, pose * 0.5]), dtype=torch.float32)
    lms = torch.tensor(np.stack([lm64, (faces.project(template, pose * 0.5, 50.0) + 0.5) * size / 224 - 0.5]),
                       dtype=torch.float32)
    frontal = frontal_landmarks(lms, poses, size)
    assert torch.allclose(frontal, torch.tensor(template[:, :2], dtype=torch.float32).expand(2, -1, -1), atol=1e-4)
    assert torch.allclose(image_landmarks(frontal, poses, size), lms, atol=1e-3)


def test_continuous_audio_rebuilds_the_waveform():
    """Per-frame windows as the data module cuts them (7 x 640 samples centred on each frame) of
    consecutive frames give back the waveform from chunk first-3 to chunk last+3."""
    wav = torch.randn(2, 40 * 640)
    frames = torch.arange(5, 15)
    starts = frames * 640 + 320 - 4480 // 2
    windows = torch.stack([torch.stack([w[s:s + 4480] for s in starts]) for w in wav])
    out = continuous_audio(windows, 7)
    assert torch.equal(out, wav[:, (5 - 3) * 640:(14 + 4) * 640])


def test_face_mask_and_masked_l1():
    template = faces.face_template()
    lm = torch.tensor(faces.project(template, np.array([0, 0, 0, 32.0, 30.0, np.log(0.4)]), 50.0)[None],
                      dtype=torch.float32)
    mask = face_mask(lm, 64)
    assert mask.shape == (1, 1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[0, 0, 30, 32] == 1 and mask[0, 0, 0, 0] == 0  # the face centre in, a corner out
    fake, real = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    direct = ((fake - real).abs() * mask).sum() / (3 * mask.sum())
    assert torch.allclose(masked_l1(fake, real, mask), direct)


def test_composer_inputs_match_and_worst_match(synth_vox2_store):
    from talkinghead.data.store import ClipStore

    store = ClipStore(synth_vox2_store)
    entry = store.clips("train")[0]
    arrays = store.load(entry, ["landmarks", "pose"])
    size = 32
    frames = torch.from_numpy(store.load_frames(entry["index"], [0, 10, 20])).permute(0, 3, 1, 2).float() / 127.5 - 1
    frames = F.interpolate(frames, size=(size, size), mode="area")
    lm = (torch.from_numpy(arrays["landmarks"]) + 0.5) * size / 224 - 0.5
    pose = torch.from_numpy(arrays["pose"])
    refs, targets = [0, 10, 20], [25, 30]
    inputs = composer_inputs(lm[targets], pose[targets], frames, lm[refs], pose[refs], 1.0)
    dist = motion_distances(pose[refs], pose[targets])
    assert torch.equal(inputs.matched, dist.argmin(1))
    assert torch.equal(inputs.warp_ref_image, frames[inputs.matched])
    assert inputs.ani_image.shape == (2, 3, size, size) and inputs.ani_mask.sum() > 0
    assert inputs.ref_labels.shape == (2, 3, 1, size, size) and inputs.label.shape == (2, 1, size, size)
    assert int(inputs.frontal) == int(np.argmin(np.linalg.norm(arrays["pose"][refs, :3], axis=1)))
    worst = composer_inputs(lm[targets], pose[targets], frames, lm[refs], pose[refs], 1.0, worst_match_prob=1.0)
    assert torch.equal(worst.matched, dist.argmax(1))


# ------------------------------------------------------------------------- stages
STAGE_PARTS = {  # trained / frozen prefixes of each stage
    "expression": (("model.expression.",), ("model.head_motion.", "model.generator.")),
    "head_motion": (("model.head_motion.", "motion_disc."), ("model.expression.", "model.generator.")),
    "generator": (("model.generator.", "netD."), ("model.expression.", "model.head_motion.")),
    "joint": (("model.generator.", "netD."), ("model.expression.", "model.head_motion.")),
}


@pytest.mark.parametrize("stage", list(STAGE_PARTS))
def test_each_stage_trains_its_parts_only(stage, tiny_cfg):
    module = build_module(tiny_cfg, stage)
    needs = {"expression": ["pca"], "head_motion": ["normaliser"], "generator": [], "joint": ["pca", "normaliser"]}
    assert module.fit_statistics() == needs[stage]  # a fresh model lacks what the stage needs
    before = snapshot(module)
    trainer = fit(module, tiny_cfg, stage)
    trained, frozen = STAGE_PARTS[stage]
    for prefix in trained:
        assert changed(before, module, prefix), prefix
    for prefix in frozen:
        assert identical(before, module, prefix), prefix
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged and all(np.isfinite(v) for v in logged.values()), logged
    assert module.skipped == 0


def test_real_batches_feed_every_stage(tiny_cfg):
    """One batch of each stage's data module: the keys its training step reads, at the model's sizes."""
    mcfg = RhythmicConfig.from_dict(build_module(tiny_cfg, "expression").config.to_dict())
    tau, k, s = mcfg.tau, mcfg.num_references, mcfg.image_size
    seq = first_batch(tiny_cfg, "head_motion")
    assert "frames" not in seq and seq["context_pose"].shape[1:] == (tau, 6)
    assert seq["context_audio"].shape[-1] == seq["audio"].shape[-1] == mcfg.head_motion.window_samples
    img = first_batch(tiny_cfg, "generator")
    assert img["frames"].shape[-1] == s and img["reference"].shape[1:] == (k, 3, s, s)
    assert "audio" not in img
    joint = first_batch(tiny_cfg, "joint")
    assert {"frames", "reference", "audio", "context_audio"} <= set(joint)
    # the references are among the context frames
    assert all(set(r.tolist()) <= set(c.tolist()) for r, c in zip(joint["reference_index"], joint["context_index"]))


def test_statistics_are_fitted_at_stage_start_and_carried_in_checkpoints(tiny_cfg, tmp_path):
    from talkinghead.data.store import ClipStore
    from talkinghead.methods.rhythmic.expression import fit_landmark_pca
    from talkinghead.methods.rhythmic.motion import motion_normaliser

    store = ClipStore(tiny_cfg.store)
    expr = build_module(tiny_cfg, "expression")
    assert not bool(expr.model.pca.fitted)
    fit(expr, tiny_cfg, "expression", steps=1)  # setup() fits the PCA
    reference = fit_landmark_pca(store, expr.config.pca_components)
    assert bool(expr.model.pca.fitted) and torch.allclose(expr.model.pca.components, reference.components)
    motion = build_module(tiny_cfg, "head_motion")
    assert not normaliser_fitted(motion.model.normaliser)
    fit(motion, tiny_cfg, "head_motion", steps=1)
    assert torch.allclose(motion.model.normaliser.std, motion_normaliser(store).std)

    paths = {}
    for name, module in (("expression", expr), ("head_motion", motion)):
        paths[name] = tmp_path / f"{name}.ckpt"
        module.trainer.save_checkpoint(str(paths[name]))
    joint = build_module(tiny_cfg, "joint")
    assert joint.load_stage_weights(paths["expression"]) == ["model.expression"]
    assert joint.load_stage_weights(paths["head_motion"]) == ["model.head_motion"]
    assert joint.fit_statistics() == []  # nothing left to fit: the checkpoints brought both
    assert torch.equal(joint.model.pca.components, expr.model.pca.components)
    assert torch.equal(joint.model.normaliser.mean, motion.model.normaliser.mean)


# ------------------------------------------------------------------------- losses
def test_sequence_losses_match_their_formulas(tiny_cfg):
    torch.manual_seed(0)
    expr = build_module(tiny_cfg, "expression")
    expr.fit_statistics()
    batch = first_batch(tiny_cfg, "expression")
    out = expr.expression_losses(batch)
    assert torch.allclose(out["loss"], out["pca"])  # landmark weight 0
    # the MSE against the targets computed directly: frontalise, PCA, minus the most frontal context frame
    seq = expr._sequence(batch)
    frontal = frontal_landmarks(seq["landmarks"], seq["pose"], expr.image_size)
    coef = expr.model.pca.transform(frontal)
    idx = [int(torch.linalg.norm(p[:, :3], dim=1).argmin()) for p in batch["context_pose"]]
    target = coef[:, seq["P"]:] - torch.stack([coef[b, i] for b, i in enumerate(idx)])[:, None]
    expr.eval()
    with torch.no_grad():
        out = expr.expression_losses(batch)  # eval: no noise, deterministic
        mel = expr.mel_windows(seq["audio"], seq["P"], seq["T"], noise=False)
        pred = expr.model.expression(mel, coef[torch.arange(len(idx)), idx])
    assert torch.allclose(out["pca"], F.mse_loss(pred, target), atol=1e-6)

    motion = build_module(tiny_cfg, "head_motion")
    motion.fit_statistics()
    out = motion.head_motion_losses(first_batch(tiny_cfg, "head_motion"))
    assert torch.allclose(out["mse"], F.mse_loss(out["pred"], out["target"]))
    assert torch.allclose(out["total"], out["mse"])  # adversarial weight 0 (official)
    assert out["target"].shape[1] == tiny_cfg.head_motion.data.window


def test_image_losses_match_their_formulas(tiny_cfg):
    module = build_module(tiny_cfg, "generator")
    batch = first_batch(tiny_cfg, "generator")
    b, t = batch["frames"].shape[:2]
    target = batch["frames"].reshape(b * t, *batch["frames"].shape[2:])
    torch.manual_seed(1)
    inputs = module.build_inputs(batch["landmarks"], batch["pose"], batch)
    with torch.no_grad():
        out = module.model.compose(inputs)
        losses = module.image_losses(out, inputs, target, inputs.label, batch["landmarks"].reshape(-1, 68, 2))
        d_total, d_real, d_fake = module.discriminator_loss(out, inputs, target, inputs.label)
    lc = module.loss_cfg
    warp = F.l1_loss(out.warped_ref, target) + F.l1_loss(out.warped_ani, target * inputs.ani_mask)
    assert torch.allclose(losses["warp"], warp * lc["warp"])
    mask = face_mask(batch["landmarks"].reshape(-1, 68, 2), target.shape[-1])
    assert torch.allclose(losses["face_l1"], masked_l1(out.image, target, mask) * lc["face_l1"])
    assert {"gan_image", "gan_raw", "feat_image", "feat_raw", "mouth_l1"} <= set(losses)
    d_in = lambda label, x: torch.cat([inputs.warp_ref_label, inputs.warp_ref_image, label, x], 1)  # noqa: E731
    with torch.no_grad():
        real = module.netD(d_in(inputs.label, target))
        expected_real = 2 * hinge_gan_loss(real, True)
        expected_fake = hinge_gan_loss(module.netD(d_in(inputs.label, out.image)), False) + \
            hinge_gan_loss(module.netD(d_in(inputs.label, out.raw)), False)
    assert torch.allclose(d_real, expected_real) and torch.allclose(d_fake, expected_fake)
    assert torch.allclose(d_total, d_real + d_fake)


def test_model_inference_pieces_need_fitted_statistics():
    model = Rhythmic(RhythmicConfig.tiny(image_size=32))
    with pytest.raises(RuntimeError, match="PCA"):
        model.predict_frontal(torch.zeros(1, 2, 1, 80, 28), torch.zeros(1, 68, 2))
    with pytest.raises(RuntimeError, match="normaliser"):
        model.extrapolate_poses(torch.zeros(1, 16, 6), torch.zeros(1, 16, 7, 640), torch.zeros(1, 4, 7, 640))


def test_module_rejects_unknown_sections():
    with pytest.raises(ValueError, match="unknown loss keys"):
        RhythmicModule("expression", model=RhythmicConfig.tiny(image_size=32).to_dict(), loss={"nope": 1.0})
