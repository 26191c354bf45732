"""PD-FGC training module (`talkinghead.methods.pdfgc.module`): each of the three stages runs a few
optimisation steps on a small synthetic batch with finite losses, trains exactly its parts and
leaves the rest untouched; the lip InfoNCE, eye contrastive and decorrelation losses match their
formulas and fall on toy cases; the memory bank keeps the latest rows."""
from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, Dataset

from talkinghead.methods.pdfgc.config import PDFGCRunConfig
from talkinghead.methods.pdfgc.module import PDFGCModule, lip_info_nce, window_centred_l1
from talkinghead.methods.pdfgc.networks import PDFGCConfig
from talkinghead.metrics.factors import eye_state
from talkinghead.metrics.image import frames_to_uint8
from talkinghead.nn.losses import FeatureMemoryBank, cross_correlation, decorrelation_loss, info_nce

S = 32       # frame side of the synthetic batches (tiny model: image_size 32)
IDS = 4


def tiny_model() -> dict:
    return PDFGCConfig.tiny(image_size=S, num_identities=IDS).to_dict()


def synthetic_face(eyes: list[list[float]]) -> torch.Tensor:
    """(68, 2) landmarks of an S-px test face: a fixed contour, brows, nose and mouth, with the left
    eye contour `eyes` (points 36-41) and the right one 10 px to its right (42-47)."""
    return torch.tensor([[x, 10.0 + 0.2 * x] for x in range(17)] + [[8.0, 8.0]] * 19    # contour, brows, nose
                        + eyes + [[x + 10, y] for x, y in eyes]                      # eyes 36-47
                        + [[12.0, 22.0], [20.0, 26.0]] * 10)                         # mouth 48-67


def synthetic_sample(i: int, window: int = 2, in_window: int = 3, landmarks: torch.Tensor | None = None) -> dict:
    """One data-module-like sample (shapes of `TalkingHeadDataModule`), deterministic per i; with
    `landmarks` (68, 2) the same points for every frame of the window."""
    g = torch.Generator().manual_seed(i)
    img = lambda *shape: torch.rand(*shape, generator=g) * 2 - 1  # noqa: E731
    t = window
    extra = {} if landmarks is None else {"landmarks": landmarks.expand(t, 68, 2).clone(),
                                          "eye_donor_landmarks": landmarks.expand(t, 68, 2).clone()}
    return {**extra,
        "frames": img(t, 3, S, S), "reference": img(1, 3, S, S), "augmented": img(t, 3, S, S),
        "mel": torch.rand(t, 1, 80, 20, generator=g),
        "negative_mel": torch.rand(1, t, 1, 80, 20, generator=g),
        "negative_clip_index": torch.tensor([i % 3]),
        "eye_donor": img(t, 3, S, S), "eye_anchor": img(t, 3, S, S),
        "window_frames": img(in_window, 3, S, S),
        "pose": torch.randn(t, 6, generator=g) * torch.tensor([0.1, 0.1, 0.1, 5.0, 5.0, 0.1])
        + torch.tensor([0.0, 0.0, 0.0, 112.0, 112.0, 0.0]),
        "speaker": torch.tensor(i % IDS), "clip_index": torch.tensor(i % 3),
        "frame_index": torch.arange(t) + 6 * i,
    }


class Samples(Dataset):
    def __init__(self, n: int, **kw):
        self.items = [synthetic_sample(i, **kw) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def fit(module: PDFGCModule, steps: int, batch: int = 3, **kw) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps * module.optimizers_per_step, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, DataLoader(Samples(batch * steps, **kw), batch_size=batch, shuffle=False))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module, prefix: str) -> bool:
    after = module.state_dict()
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


def logged(module) -> dict:
    return {k: float(v) for k, v in module.trainer.callback_metrics.items()}


# ------------------------------------------------------------------------- stages
def test_motion_stage_trains_appearance_motion_and_g0_only():
    torch.manual_seed(0)
    module = PDFGCModule("motion", model=tiny_model(), loss={"vgg": 0.0}, optim={"lr": 1e-3, "d_lr": 1e-3},
                         sample_every_n_steps=0)
    before = snapshot(module)
    fit(module, steps=3)
    logs = logged(module)
    for key in ("train/loss_gan", "train/loss_feat", "train/loss_l1", "train/loss_identity", "train/loss_D"):
        assert math.isfinite(logs[key]), key
    for part in ("model.net_appearance.model.", "model.net_appearance.fc.", "model.net_motion.model.",
                 "model.net_motion.to_feature.", "model.net_motion.to_embed.", "net_generator0.convs.", "netD."):
        assert changed(before, module, part), part
    for part in ("model.net_motion.to_mouth.", "model.net_motion.to_emo.", "model.net_audio.",
                 "model.net_generator."):
        assert not changed(before, module, part), part  # frozen and in eval mode: BN statistics too
    assert module.skipped == 0


def test_mouth_and_eye_box_l1_train_g0_from_the_landmarks():
    """The CPU aids: with loss.mouth_l1 / loss.eye_l1 the motion stage logs both box losses (from the
    batch's landmarks, in data-frame pixels); without landmarks it says what is missing."""
    torch.manual_seed(0)
    face = synthetic_face([[9.0, 12.0], [13.0, 13.0]] * 3)
    module = PDFGCModule("motion", model=tiny_model(), loss={"vgg": 0.0, "mouth_l1": 20.0, "eye_l1": 20.0},
                         optim={"lr": 1e-3, "d_lr": 1e-3}, sample_every_n_steps=0)
    fit(module, steps=2, landmarks=face)
    logs = logged(module)
    assert math.isfinite(logs["train/loss_mouth_l1"]) and logs["train/loss_mouth_l1"] > 0
    assert math.isfinite(logs["train/loss_eye_l1"]) and logs["train/loss_eye_l1"] > 0
    bare = PDFGCModule("motion", model=tiny_model(), loss={"vgg": 0.0, "eye_l1": 1.0}, sample_every_n_steps=0)
    fake = torch.zeros(2, 3, S, S)
    with pytest.raises(ValueError, match="eye_l1 need the batch's landmarks"):
        bare._synthesis_losses(fake, fake, None, S)


def test_motion_landmarks_loss_trains_g0_and_the_landmark_network_learns_only_its_own_fit():
    """L_mot's substitute (loss.motion_landmarks): a landmark network, its own third optimiser, learns
    the batch's landmarks (L1); the L_mot term reaches G_0 but not the landmark network's weights."""
    face = synthetic_face([[9.0, 12.0], [13.0, 13.0]] * 3)
    optim = {"lr": 1e-3, "d_lr": 1e-3, "weight_decay": 0.0}
    runs = {}
    for fit_weight in (1.0, 0.0):
        torch.manual_seed(0)
        module = PDFGCModule("motion", model=tiny_model(), loss={"vgg": 0.0, "motion_landmarks": 1.0,
                                                                  "landmark_fit": fit_weight},
                             optim=optim, sample_every_n_steps=0)
        assert module.optimizers_per_step == 3 and list(module.trained_groups())[-1] == "landmarks"
        params = {k: v.detach().clone() for k, v in module.net_landmarks.named_parameters()}
        g0 = snapshot(module.net_generator0)
        fit(module, steps=2, landmarks=face)
        logs = logged(module)
        assert math.isfinite(logs["train/loss_motion_landmarks"]) and logs["train/loss_motion_landmarks"] > 0
        assert math.isfinite(logs["train/landmark_l1_px"]) and module.skipped == 0
        runs[fit_weight] = any(not torch.equal(v, dict(module.net_landmarks.named_parameters())[k]) for k, v in params.items())
        assert changed({f"g.{k}": v for k, v in g0.items()}, torch.nn.ModuleDict({"g": module.net_generator0}), "g.convs.")
    assert runs == {1.0: True, 0.0: False}  # its weights move by its own fit only
    plain = PDFGCModule("motion", model=tiny_model(), loss={"vgg": 0.0}, sample_every_n_steps=0)
    assert not hasattr(plain, "net_landmarks") and plain.optimizers_per_step == 2


def test_fine_stage_trains_lip_eye_pose_branches_on_a_frozen_trunk():
    torch.manual_seed(0)
    module = PDFGCModule("fine", model=tiny_model(), loss={"lip_other_clips": True, "temperature": 0.1},
                         optim={"lr": 1e-3}, sample_every_n_steps=0)
    assert set(module.trained_groups()) == {"lip", "eye", "pose"}
    before = snapshot(module)
    fit(module, steps=3)
    logs = logged(module)
    for key in ("train/lip_v2a", "train/lip_a2v", "train/eye_loss", "train/pose_loss"):
        assert math.isfinite(logs[key]), key
    for part in ("model.net_motion.to_mouth.", "model.net_motion.mouth_embed.", "model.net_audio.model.",
                 "model.net_audio.mouth_embed.", "model.net_motion.to_eye.", "model.net_motion.eye_embed.",
                 "model.net_motion.to_headpose.", "model.net_motion.headpose_embed."):
        assert changed(before, module, part), part
    for part in ("model.net_motion.model.", "model.net_motion.to_feature.", "model.net_motion.to_emo.",
                 "model.net_appearance.", "model.net_generator."):
        assert not changed(before, module, part), part
    assert not module.model.net_motion.model.training and module.model.net_motion.to_eye.training


def test_eye_prior_regresses_the_eye_codes_to_the_measured_eye_state():
    """loss.eye_prior: dims 0-3 of the base frame's, the donor's and the anchor's eye codes against
    `eye_state` x eye_prior_scale of the base frame, the donor and the donor; rows without a
    measurable eye left out; its gradient reaches the eye branch only."""
    face = synthetic_face([[8.0, 12.0], [10.0, 11.0], [12.0, 11.0], [14.0, 12.0], [12.0, 13.0], [10.0, 13.0]])
    torch.manual_seed(0)
    module = PDFGCModule("fine", model=tiny_model(), loss={"eye_prior": 2.0}, sample_every_n_steps=0)
    batch = torch.utils.data.default_collate([synthetic_sample(i, landmarks=face) for i in range(2)])
    batch["eye_donor_landmarks"][1] = float("nan")  # the second donor: no face found
    scale = torch.tensor([5.0, 5.0, 20.0, 20.0])
    base = module.eye_prior_target(batch["frames"], batch["landmarks"])
    images = frames_to_uint8((batch["frames"].reshape(-1, 3, S, S) + 1) / 2)
    expected = torch.from_numpy(eye_state(images, batch["landmarks"].reshape(-1, 68, 2).numpy())).float() * scale
    torch.testing.assert_close(base, expected)
    assert torch.isfinite(base).all() and torch.allclose(base[:, :2], torch.tensor(5.0 * (1 - (4 / 12) / 0.3)))  # EAR 1/3
    donor = module.eye_prior_target(batch["eye_donor"], batch["eye_donor_landmarks"])
    assert torch.isfinite(donor[:2]).all() and torch.isnan(donor[2:]).all()

    losses = module.fine_losses(batch)
    mot = module.model.net_motion
    with torch.no_grad():
        code = lambda x: mot.embed("eye", module._features(x.reshape(-1, 3, S, S)))[:, :4]  # noqa: E731
        f2, f1, fa = code(batch["frames"]), code(batch["eye_donor"]), code(batch["eye_anchor"])
    # two windows of 2 frames each for base, donor, anchor; the second donor's and anchor's frames have
    # no target, so those windows drop out; each remaining one counts by its change from its own mean
    centred = lambda x: x - x.mean(1, keepdim=True)  # noqa: E731
    pairs = [(f2.view(2, 2, 4), base.view(2, 2, 4)), (f1[:2].view(1, 2, 4), donor[:2].view(1, 2, 4)),
             (fa[:2].view(1, 2, 4), donor[:2].view(1, 2, 4))]
    want = torch.cat([(centred(p) - centred(q)).abs().flatten() for p, q in pairs]).mean()
    assert losses["eye"]["prior"].item() == pytest.approx(want.item(), rel=1e-5)
    module.zero_grad()
    losses["eye"]["loss"].backward()
    grads = {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(("model.net_motion.to_eye.", "model.net_motion.eye_embed.")) for n in grads)
    with pytest.raises(ValueError, match="eye_prior_scale needs 4 values"):
        PDFGCModule("fine", model=tiny_model(), loss={"eye_prior": 1.0, "eye_prior_scale": [5.0, 5.0]})
    # the closure read from the pixels instead (loss.eye_prior_closure: lid)
    lid = PDFGCModule("fine", model=tiny_model(), loss={"eye_prior": 2.0, "eye_prior_closure": "lid"},
                      sample_every_n_steps=0)
    expected = eye_state(images, batch["landmarks"].reshape(-1, 68, 2).numpy(), closure="lid")
    torch.testing.assert_close(lid.eye_prior_target(batch["frames"], batch["landmarks"]),
                               torch.from_numpy(expected).float() * scale, equal_nan=True)
    with pytest.raises(ValueError, match="eye_prior_closure must be"):
        PDFGCModule("fine", model=tiny_model(), loss={"eye_prior": 1.0, "eye_prior_closure": "ear"})


def test_window_centred_l1_counts_changes_within_windows_only():
    nan = float("nan")
    pred = torch.tensor([[[1.0], [3.0], [0.0]], [[5.0], [5.0], [5.0]]], requires_grad=True)
    offset = pred.detach() + torch.tensor([[[10.0]], [[-4.0]]])  # the same changes, other levels
    assert window_centred_l1(pred, offset).item() == pytest.approx(0.0, abs=1e-6)
    # window 0: frames 0 and 1 only (pred -1, +1; target -2, +2: error 1 each); window 1 alone left out
    target = torch.tensor([[[0.0], [4.0], [nan]], [[nan], [1.0], [nan]]])
    assert window_centred_l1(pred, target).item() == pytest.approx(1.0)
    none = window_centred_l1(pred, torch.full((2, 3, 1), nan))
    assert none.item() == 0.0 and none.requires_grad


def test_expression_stage_trains_emotion_and_generator_and_banks_features():
    torch.manual_seed(0)
    module = PDFGCModule("expression", model=tiny_model(), loss={"vgg": 0.0}, optim={"lr": 1e-3}, bank_size=5,
                         sample_every_n_steps=0)
    before = snapshot(module)
    fit(module, steps=3, window=1, in_window=3)
    logs = logged(module)
    for key in ("train/loss_gan", "train/loss_decorrelation", "train/loss_motion", "train/loss_l1"):
        assert math.isfinite(logs[key]), key
    for part in ("model.net_motion.to_emo.", "model.net_motion.emo_embed.", "model.net_generator.convs.", "netD."):
        assert changed(before, module, part), part
    for part in ("model.net_motion.model.", "model.net_motion.to_mouth.", "model.net_motion.to_eye.",
                 "model.net_motion.to_headpose.", "model.net_audio.", "model.net_appearance."):
        assert not changed(before, module, part), part
    # 3 batches of 3 pushed into a bank of 5: full, the write position at 9 % 5
    assert int(module.emo_bank.filled) == 5 and int(module.emo_bank.position) == 4
    assert int(module.audio_bank.filled) == 5


def test_expression_encoder_stops_after_expression_steps():
    torch.manual_seed(0)
    module = PDFGCModule("expression", model=tiny_model(), loss={"vgg": 0.0, "decorrelation": 1.0},
                         optim={"lr": 1e-3, "expression_steps": 0}, bank_size=4, sample_every_n_steps=0)
    before = snapshot(module)
    fit(module, steps=2, window=1, in_window=2)
    assert not changed(before, module, "model.net_motion.to_emo.")
    assert changed(before, module, "model.net_generator.convs.")
    assert int(module.emo_bank.filled) == 0  # no decorrelation once E_exp is fixed


def test_optimiser_settings_group_lr_and_step_lr():
    module = PDFGCModule("expression", model=tiny_model(), bank_size=4,
                         optim={"lr": 2e-5, "d_lr": 3.5e-6, "group_lr": {"expression": 1e-5}, "step_size": 2,
                                "gamma": 0.5, "schedule": {"discriminator": [3, 0.1]}})
    (opt_g, opt_d), (sched_g, sched_d) = module.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in opt_g.param_groups}
    assert lrs == {"expression": pytest.approx(1e-5), "generator": pytest.approx(2e-5)}
    assert opt_g.defaults["betas"] == (0.0, 0.99) and opt_g.defaults["weight_decay"] == pytest.approx(1e-3)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(3.5e-6)
    for _ in range(2):
        sched_g.step()
        sched_d.step()
    assert opt_g.param_groups[1]["lr"] == pytest.approx(1e-5)       # halved after 2 batches
    assert opt_d.param_groups[0]["lr"] == pytest.approx(3.5e-6)     # its own period: 3


def test_paper_defaults_and_schema():
    cfg = PDFGCRunConfig()
    assert cfg.bank_size == 512
    assert list(cfg.expression.optim.betas) == [0.0, 0.99] and cfg.expression.optim.weight_decay == 1e-3
    assert cfg.expression.loss.feat == 10.0 and cfg.expression.loss.vgg == 10.0 and cfg.fine.loss.lip == 100.0
    assert PDFGCModule.STAGES == ("motion", "fine", "expression")
    with pytest.raises(ValueError, match="unknown loss keys"):
        PDFGCModule("fine", model=tiny_model(), loss={"nope": 1})


def test_configs_load():
    from talkinghead.config import load_config
    from talkinghead.training.method import ROOT

    for name in ("base", "synth", "tiny"):
        cfg = load_config(PDFGCRunConfig, ROOT / "experiments" / "pdfgc" / f"{name}.yaml", ())
        assert cfg.expression.data.in_window or cfg.data.in_window
    base = load_config(PDFGCRunConfig, ROOT / "experiments" / "pdfgc" / "base.yaml", ())
    assert base.expression.data.in_window == 13 and base.bank_size == 512


def test_pose_standardise_makes_the_fine_targets_unit_variance(tmp_path):
    """loss.pose_standardise: the fine module's pose targets of the train split's frames have mean 0 and
    std 1 per dimension (the offsets / scales from the store); off, the fixed base offsets are used."""
    import importlib.util

    import numpy as np

    from talkinghead.config import load_config
    from talkinghead.data.store import ClipStore
    from talkinghead.methods.pdfgc.method import build_module, pose_statistics
    from talkinghead.training.method import ROOT

    spec = importlib.util.spec_from_file_location("_store_helpers", ROOT / "tests" / "data" / "test_store.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    helpers.make_store(tmp_path / "store", [("a/v/1", "a", "train", 30), ("b/v/1", "b", "train", 24),
                                            ("c/v/1", "c", "test", 20)], truth=True)
    store = ClipStore(tmp_path / "store")
    poses = torch.from_numpy(np.concatenate([store.load(c, ["pose"])["pose"] for c in store.clips("train")])).float()
    overrides = [f"store={tmp_path / 'store'}", "model.preset=tiny", "model.image_size=32", "model.appearance_size=32"]
    cfg = load_config(PDFGCRunConfig, ROOT / "experiments" / "pdfgc" / "base.yaml",
                      overrides + ["fine.loss.pose_standardise=true"])
    target = build_module(cfg, "fine").pose_target(poses)
    assert torch.allclose(target.mean(0), torch.zeros(6), atol=1e-4)
    assert torch.allclose(target.std(0, unbiased=False), torch.ones(6), atol=1e-4)
    mean, inv_std = pose_statistics(tmp_path / "store", "train")
    assert np.allclose(mean, poses.double().mean(0).numpy(), atol=1e-4)
    plain = build_module(load_config(PDFGCRunConfig, ROOT / "experiments" / "pdfgc" / "base.yaml", overrides), "fine")
    assert plain.loss_cfg["pose_offset"] == PDFGCRunConfig().fine.loss.pose_offset
    with pytest.raises(ValueError, match="no clips in split"):
        pose_statistics(tmp_path / "store", "nope")


# ------------------------------------------------------------------------- losses
def test_lip_info_nce_matches_the_formula_and_masks_near_frames():
    torch.manual_seed(0)
    b, t, d = 2, 6, 5
    v, a = torch.randn(b, t, d), torch.randn(b, t, d)
    clip, frame = torch.tensor([0, 1]), torch.arange(t).expand(b, t)
    out = lip_info_nce(v, a, clip, frame, min_shift=3, other_clips=False)
    vn, an = torch.nn.functional.normalize(v.reshape(-1, d), dim=-1), torch.nn.functional.normalize(a.reshape(-1, d), dim=-1)
    total_v2a, total_a2v = 0.0, 0.0
    for i in range(b * t):
        ci, fi = i // t, i % t
        cands = [j for j in range(b * t) if j // t == ci and (j == i or abs(j % t - fi) >= 3)]
        s_v = torch.stack([vn[i] @ an[j] for j in cands])
        s_a = torch.stack([an[i] @ vn[j] for j in cands])
        k = cands.index(i)
        total_v2a += -(s_v[k] - torch.logsumexp(s_v, 0))
        total_a2v += -(s_a[k] - torch.logsumexp(s_a, 0))
    assert out["v2a"].item() == pytest.approx(total_v2a.item() / (b * t), rel=1e-5)
    assert out["a2v"].item() == pytest.approx(total_a2v.item() / (b * t), rel=1e-5)
    wider = lip_info_nce(v, a, clip, frame, min_shift=3, other_clips=True)
    assert wider["v2a"].item() > out["v2a"].item()  # more negatives, larger loss
    with pytest.raises(ValueError, match="no negatives"):
        lip_info_nce(v[:, :2], a[:, :2], clip, frame[:, :2], min_shift=3, other_clips=False)


def test_lip_info_nce_falls_when_learning_a_toy_alignment():
    torch.manual_seed(0)
    content = torch.randn(2, 8, 4)
    v_map, a_map = torch.nn.Linear(4, 6), torch.nn.Linear(4, 6)
    visual_in = content + 0.05 * torch.randn_like(content)
    opt = torch.optim.Adam([*v_map.parameters(), *a_map.parameters()], lr=0.05)
    clip, frame = torch.tensor([0, 1]), torch.arange(8).expand(2, 8)
    losses = []
    for _ in range(60):
        loss = lip_info_nce(v_map(visual_in), a_map(content), clip, frame, 2, True, 0.1)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_lip_info_nce_gives_a_speaker_shortcut_nothing_with_same_clip_negatives():
    """Codes that hold only who speaks (one vector per clip, as a face and a voice can share) are
    rewarded when other clips are negatives, and score exactly chance with the paper's same-clip
    negatives, so only lip timing can lower the loss there."""
    b, t, d = 4, 8, 4
    speaker = torch.eye(d)[:b] * 20.0  # clip c's visual and audio code both = speaker c
    codes = speaker[:, None].expand(b, t, d)
    clip, frame = torch.arange(b), torch.arange(t).expand(b, t)
    same_clip = lip_info_nce(codes, codes, clip, frame, min_shift=5, other_clips=False, temperature=0.1)
    other_clips = lip_info_nce(codes, codes, clip, frame, min_shift=5, other_clips=True, temperature=0.1)
    # same clip: every candidate scores alike -> mean log(number of candidates) per anchor
    candidates = (frame[0, :, None] - frame[0, None, :]).abs() >= 5
    chance = torch.log(1.0 + candidates.sum(1).float()).mean()
    assert same_clip["v2a"].item() == pytest.approx(chance.item(), rel=1e-5)
    # other clips: their b - 1 clips' t candidates each are told apart by the speaker alone
    all_chance = torch.log(1.0 + candidates.sum(1).float() + (b - 1) * t).mean()
    assert other_clips["v2a"].item() < all_chance.item() - 1.0
    assert other_clips["v2a"].item() == pytest.approx(chance.item(), abs=1e-3)


def test_eye_contrastive_loss_prefers_the_donor_and_falls():
    """Eq. 4 through info_nce: positive (donor, anchor), one negative (base, anchor)."""
    f1, f2, fa = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    direct = -math.log(math.exp(math.cos(math.pi / 4)) / (2 * math.exp(math.cos(math.pi / 4))))
    assert info_nce(fa, f1, f2[:, None]).item() == pytest.approx(direct, rel=1e-6)
    torch.manual_seed(0)
    eye = torch.nn.Linear(8, 3)   # a toy eye encoder on images = [eye region 4 dims | rest 4 dims]
    opt = torch.optim.Adam(eye.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        donor, base = torch.randn(16, 8), torch.randn(16, 8)
        anchor = torch.cat([donor[:, :4], base[:, 4:]], 1)  # donor's eye region on the base frame
        loss = info_nce(eye(anchor), eye(donor), eye(base)[:, None], 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.3 * sum(losses[:5])
    assert eye.weight[:, 4:].abs().mean() < eye.weight[:, :4].abs().mean()  # it learned to ignore the rest


def test_decorrelation_loss_formula_and_toy_decrease():
    torch.manual_seed(0)
    a, b = torch.randn(50, 3), torch.randn(50, 4)
    corr = torch.tensor([[torch.corrcoef(torch.stack([a[:, i], b[:, j]]))[0, 1] for j in range(4)] for i in range(3)])
    assert torch.allclose(cross_correlation(a, b), corr, atol=1e-4)
    assert decorrelation_loss(a, b).item() == pytest.approx((corr ** 2).sum().item() / 3, rel=1e-3)
    # a code that copies the audio: perfectly correlated, then decorrelated by gradient descent
    audio = torch.randn(64, 4)
    mix = torch.nn.Parameter(torch.eye(4)[:2] + 0.1 * torch.randn(2, 4))
    other = torch.randn(64, 2)
    opt = torch.optim.Adam([mix], lr=0.05)
    first = None
    for _ in range(100):
        code = audio @ mix.t() + other
        loss = decorrelation_loss(code, audio)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_decorrelation_of_a_constant_code_is_zero_with_finite_gradients():
    """A constant column (a dead encoder) correlates 0 and must not turn the loss's gradient into NaN
    (the square root of a zero variance has an infinite derivative)."""
    code = torch.ones(16, 3, requires_grad=True)
    audio = torch.randn(16, 4, requires_grad=True)
    loss = decorrelation_loss(code * 2.0, audio)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(code.grad).all() and torch.isfinite(audio.grad).all()


def test_memory_bank_keeps_the_latest_rows_newest_first():
    bank = FeatureMemoryBank(5, 2)
    assert bank.latest(3).shape == (0, 2)
    rows = torch.arange(14.0).view(7, 2)
    bank.push(rows[:3])
    assert torch.equal(bank.latest(10), rows[:3].flip(0))
    bank.push(rows[3:7])  # 7 rows into 5: the first two are gone
    assert int(bank.filled) == 5 and int(bank.position) == 2
    assert torch.equal(bank.latest(5), rows[2:7].flip(0))
    assert torch.equal(bank.latest(2), rows[5:7].flip(0))
    x = torch.ones(1, 2, requires_grad=True)
    bank.push(x * 3)
    assert not bank.latest(1).requires_grad and torch.equal(bank.latest(1), torch.full((1, 2), 3.0))
    assert set(bank.state_dict()) == {"features", "filled", "position"}


def test_lip_decorrelation_uses_batch_plus_latest_bank_rows():
    module = PDFGCModule("expression", model=tiny_model(), bank_size=6)
    torch.manual_seed(0)
    old_e, old_a = torch.randn(4, module.config.emo_dim), torch.randn(4, module.config.lip_dim)
    module.emo_bank.push(old_e)
    module.audio_bank.push(old_a)
    emo = torch.randn(3, module.config.emo_dim, requires_grad=True)
    audio = torch.randn(3, module.config.lip_dim)
    loss = module.lip_decorrelation(emo, audio)
    # M = 6 rows: this batch (3) and the 3 newest banked
    expect = decorrelation_loss(torch.cat([emo, old_e[1:].flip(0)]), torch.cat([audio, old_a[1:].flip(0)]))
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    loss.backward()
    assert emo.grad is not None and emo.grad.abs().sum() > 0
    assert torch.equal(module.emo_bank.latest(3), emo.detach().flip(0))


def test_expression_generator_can_start_from_stage1_g0(tmp_path):
    """generator_init stage1: G takes G_0's synthesis tensors (same name and shape) from the motion
    checkpoint, not the style affines; scratch (the paper) leaves G as initialised."""
    torch.manual_seed(0)
    motion = PDFGCModule("motion", model=tiny_model())
    ckpt = tmp_path / "motion.ckpt"
    torch.save({"hyper_parameters": {"stage": "motion"}, "state_dict": motion.state_dict()}, ckpt)
    g0 = motion.net_generator0.state_dict()
    started = PDFGCModule("expression", model=tiny_model(), generator_init="stage1")
    loaded = started.load_stage_weights(ckpt)
    assert any("net_generator0" in item for item in loaded)
    g = started.model.net_generator.state_dict()
    same = [k for k in g if k in g0 and g[k].shape == g0[k].shape]
    assert same and all(torch.equal(g[k], g0[k]) for k in same)
    assert any(k in g0 and g[k].shape != g0[k].shape for k in g)  # the style affines differ in shape
    # ... and start from G_0's appearance columns: with zero codes G draws what G_0 draws with a zero
    # unified motion code; the codes' columns start at zero
    app = started.model.appearance(torch.rand(2, 3, 32, 32) * 2 - 1)
    cfg = started.config
    zeros = lambda d: torch.zeros(2, d)  # noqa: E731
    with torch.no_grad():
        ours = started.model.generate(app.feature, app.feature_map, zeros(cfg.lip_dim), zeros(cfg.emo_dim),
                                      zeros(cfg.eye_dim), zeros(cfg.pose_dim), noise_mode="const")
        theirs = motion.net_generator0(torch.cat([app.feature, zeros(cfg.motion.motion_dim)], 1),
                                       identity_map=app.feature_map, noise_mode="const")
    assert torch.allclose(ours, theirs, atol=1e-5)
    affine = started.model.net_generator.conv1.conv.modulation.weight
    assert not affine[:, cfg.appearance_dim:].any() and affine[:, :cfg.appearance_dim].any()
    scratch = PDFGCModule("expression", model=tiny_model())
    scratch.load_stage_weights(ckpt)
    convs = [k for k in same if k.startswith("convs.") and k.endswith("weight")]
    assert not all(torch.equal(scratch.model.net_generator.state_dict()[k], g0[k]) for k in convs)
    with pytest.raises(ValueError, match="generator_init"):
        PDFGCModule("expression", model=tiny_model(), generator_init="g0")


def test_fine_stage_trunk_trains_the_trunk_through_the_named_branches_only():
    """trunk [lip, pose]: one optimiser, the trunk moves by the lip and pose losses, never the eye's."""
    torch.manual_seed(0)
    module = PDFGCModule("fine", model=tiny_model(), optim={"lr": 1e-3}, loss={"lip_other_clips": True},
                         trunk=["pose", "lip"])
    assert module.trunk == ("lip", "pose")
    assert list(module.stage_parameters("fine")) == ["fine"] and "trunk" in module.stage_parameters("fine")["fine"]
    before = snapshot(module)
    fit(module, steps=2, window=4)
    assert changed(before, module, "model.net_motion.model.")
    trunk = list(module.model.net_motion.model.parameters())
    batch = torch.utils.data.default_collate([synthetic_sample(i, window=4) for i in range(3)])
    for branch, reaches in (("eye", False), ("pose", True), ("lip", True)):
        module.zero_grad()
        module.fine_losses(batch)[branch]["loss"].backward()
        assert any(p.grad is not None and p.grad.any() for p in trunk) == reaches, branch
    # the paper: no trunk, three optimisers
    assert list(PDFGCModule("fine", model=tiny_model()).stage_parameters("fine")) == ["lip", "eye", "pose"]
    with pytest.raises(ValueError, match="unknown fine-stage branches"):
        PDFGCModule("fine", model=tiny_model(), trunk=["mouth"])
