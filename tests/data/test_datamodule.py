"""Tests for talkinghead.data.datamodule.TalkingHeadDataModule (tiny synthetic stores, CPU, fast)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.data import store
from talkinghead.data.audio import mel_windows
from talkinghead.data.datamodule import TalkingHeadDataModule, WindowDataset
from talkinghead.data.transforms import (
    CenteredRandomCrop,
    ColorTransfer,
    Compose,
    MotionAppearanceAugment,
    PaperPerspective,
)


def _load_helpers():
    """`make_store` from test_store.py beside this file (tests/ is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_store_test_helpers", Path(__file__).with_name("test_store.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_store = _load_helpers().make_store

SIZE = 64
CLIPS = [
    ("id00001/vidA/00001", "id00001", "train", 40),
    ("id00001/vidA/00002", "id00001", "train", 32),
    ("id00002/vidB/00001", "id00002", "train", 36),
    ("id00003/vidC/00001", "id00003", "train", 28),
    ("id00003/vidD/00003", "id00003", "train", 30),
    ("id00009/vidT/00001", "id00009", "test", 30),
    ("id00009/vidT/00002", "id00009", "test", 24),
]
#: colour transfer, perspective, centred crop (what PC-AVS's augmentation draws, applied one by one)
TARGET_AUGMENT = Compose([ColorTransfer(), PaperPerspective(), CenteredRandomCrop()])
PCAVS = dict(window=5, num_references=1, num_negatives=2, num_shifted=2, augment=TARGET_AUGMENT, image_size=SIZE)
PDFGC = dict(window=5, num_references=1, eye_pairs=True, in_window=13, augment=MotionAppearanceAugment(),
             image_size=SIZE)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Samples are built from small tensors: intra-op threads only add OpenMP wake-up latency
    (DataLoader workers run single-threaded too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm") / "store"
    made = make_store(root, CLIPS, size=SIZE, truth=True, seed=11)
    return root, made


def batches(dm: TalkingHeadDataModule, which: str = "train") -> list[dict]:
    loader = dm.train_dataloader() if which == "train" else dm.val_dataloader()
    return list(loader)


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_needs_exactly_one_source(tiny):
    with pytest.raises(ValueError, match="exactly one"):
        TalkingHeadDataModule()
    with pytest.raises(ValueError, match="exactly one"):
        TalkingHeadDataModule(store="a", shards="b")
    with pytest.raises(ValueError, match="augment must be a callable"):
        TalkingHeadDataModule(store=str(tiny[0]), augment="pcavs")  # a method name: the method maps it
    with pytest.raises(ValueError, match="augment must be a callable"):
        TalkingHeadDataModule(store=str(tiny[0]), augment=3)


def test_augment_object_is_not_a_checkpoint_hyperparameter(tiny, tmp_path):
    """Lightning saves the data module's hparams into checkpoints, which load with weights_only=True:
    the augmentation object must not be among them (its repr is)."""
    dm = TalkingHeadDataModule(store=str(tiny[0]), **PCAVS)
    assert dm.hparams["augment"] == repr(TARGET_AUGMENT) and "augment" not in dm.hparams_initial
    torch.save({"datamodule_hyper_parameters": dict(dm.hparams)}, tmp_path / "hp.pt")
    assert torch.load(tmp_path / "hp.pt", weights_only=True)["datamodule_hyper_parameters"]["window"] == 5
    assert TalkingHeadDataModule(store=str(tiny[0])).hparams["augment"] is None


def test_pcavs_batch(tiny):
    root, made = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=4, seed=3, **PCAVS)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    b, t, s = 4, 5, SIZE
    expect = {
        "frames": ((b, t, 3, s, s), torch.float32), "reference": ((b, 1, 3, s, s), torch.float32),
        "augmented": ((b, t, 3, s, s), torch.float32), "mel": ((b, t, 1, 80, 20), torch.float32),
        "negative_mel": ((b, 4, t, 1, 80, 20), torch.float32), "landmarks": ((b, t, 68, 2), torch.float32),
        "landmarks_found": ((b, t), torch.bool), "pose": ((b, t, 6), torch.float32),
        "speaker": ((b,), torch.int64), "frame_index": ((b, t), torch.int64), "clip_index": ((b,), torch.int64),
        "negative_clip_index": ((b, 4), torch.int64), "negative_frame_index": ((b, 4, t), torch.int64),
        "reference_index": ((b, 1), torch.int64), "truth_landmarks": ((b, t, 68, 2), torch.float32),
        "truth_blink": ((b, t), torch.float32), "truth_viseme": ((b, t), torch.int64),
        "reference_landmarks": ((b, 1, 68, 2), torch.float32), "reference_pose": ((b, 1, 6), torch.float32),
    }
    assert set(batch) == set(expect)
    for k, (shape, dtype) in expect.items():
        assert tuple(batch[k].shape) == shape and batch[k].dtype == dtype, (k, batch[k].shape, batch[k].dtype)
    for k in ("frames", "reference", "augmented"):
        assert batch[k].min() >= -1 and batch[k].max() <= 1 and batch[k].std() > 0.05, k
    assert not torch.allclose(batch["augmented"], batch["frames"])
    assert batch["mel"].min() >= 0 and batch["mel"].max() <= 1
    # window: consecutive frames, inside the audio margins; reference outside the window
    fi = batch["frame_index"]
    assert torch.all(fi[:, 1:] - fi[:, :-1] == 1) and fi.min() >= 2
    for i in range(b):
        assert batch["reference_index"][i, 0] not in fi[i]
    # the target frames, landmarks, truth and mel are those of the stored clip
    cs = store.ClipStore(root)
    for i in range(b):
        entry = cs.clips()[int(batch["clip_index"][i])]
        arrays = made[entry["clip_id"]]
        idx = batch["frame_index"][i].numpy()
        assert idx.max() <= entry["num_frames"] - 2
        ref = torch.from_numpy(store.decode_frames(arrays["frames"], arrays["frame_offsets"], idx))
        np.testing.assert_allclose(((batch["frames"][i] + 1) * 127.5).permute(0, 2, 3, 1).numpy(), ref.numpy(),
                                   atol=1e-3)
        np.testing.assert_array_equal(batch["landmarks"][i].numpy(), arrays["landmarks"][idx])
        np.testing.assert_array_equal(batch["truth_viseme"][i].numpy(), arrays["truth_viseme"][idx])
        want = mel_windows(torch.from_numpy(arrays["mel"]), entry["num_frames"])[idx]
        assert torch.equal(batch["mel"][i], want)


def test_negatives_other_clips_and_shifted_same_clip(tiny):
    root, made = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=5, seed=1, **PCAVS)
    cs = store.ClipStore(root)
    for batch in batches(dm):
        for i in range(len(batch["clip_index"])):
            clip = int(batch["clip_index"][i])
            start = int(batch["frame_index"][i, 0])
            for n in range(4):
                other = int(batch["negative_clip_index"][i, n])
                idx = batch["negative_frame_index"][i, n]
                entry = cs.clips()[other]
                want = mel_windows(torch.from_numpy(made[entry["clip_id"]]["mel"]), entry["num_frames"])[idx]
                assert torch.equal(batch["negative_mel"][i, n], want)
                assert torch.all(idx[1:] - idx[:-1] == 1)
                if n < 2:  # other clips of the same split
                    assert other != clip and entry["split"] == "train"
                else:  # shifted: same clip, at least 5 frames away, either direction
                    assert other == clip
                    assert abs(int(idx[0]) - start) >= 5
                    assert not torch.equal(batch["negative_mel"][i, n], batch["mel"][i])


def test_frame_step_spreads_the_window(tiny):
    """frame_step=5: the window's frames are 5 apart, inside the clip and its audio margins, with the
    frames, landmarks and mel windows of exactly those frames; shifted negatives are spread the same way."""
    root, made = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=4, seed=4, window=4, frame_step=5, num_shifted=2,
                               num_references=1, samples_per_epoch=16, image_size=SIZE)
    cs = store.ClipStore(root)
    for batch in batches(dm):
        fi = batch["frame_index"]
        assert torch.all(fi[:, 1:] - fi[:, :-1] == 5) and fi.min() >= 2
        assert torch.all(batch["negative_frame_index"][..., 1:] - batch["negative_frame_index"][..., :-1] == 5)
        for i in range(len(fi)):
            entry = cs.clips()[int(batch["clip_index"][i])]
            arrays, idx = made[entry["clip_id"]], fi[i].numpy()
            assert idx.max() <= entry["num_frames"] - 2
            assert int(batch["reference_index"][i, 0]) not in idx
            frames = store.decode_frames(arrays["frames"], arrays["frame_offsets"], idx)
            np.testing.assert_allclose(((batch["frames"][i] + 1) * 127.5).permute(0, 2, 3, 1).numpy(), frames,
                                       atol=1e-3)
            np.testing.assert_array_equal(batch["landmarks"][i].numpy(), arrays["landmarks"][idx])
            assert torch.equal(batch["mel"][i], mel_windows(torch.from_numpy(arrays["mel"]), entry["num_frames"])[idx])
    with pytest.raises(ValueError, match="frame_step must be >= 1"):
        TalkingHeadDataModule(store=str(root), frame_step=0)


def test_shift_directions_both_occur(tiny):
    root, _ = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=8, seed=0, num_shifted=1, num_references=0,
                               samples_per_epoch=64, image_size=SIZE)
    signs = set()
    for batch in batches(dm):
        shift = batch["negative_frame_index"][:, 0, 0] - batch["frame_index"][:, 0]
        signs |= set(torch.sign(shift).tolist())
        assert shift.abs().min() >= 5
    assert signs == {-1, 1}


def test_pdfgc_batch(tiny):
    root, _ = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=3, seed=2, **PDFGC)
    batch = next(iter(dm.train_dataloader()))
    b, t, s = 3, 5, SIZE
    for k, shape in {"eye_donor": (b, t, 3, s, s), "eye_anchor": (b, t, 3, s, s), "augmented": (b, t, 3, s, s),
                     "window_frames": (b, 13, 3, s, s), "window_index": (b, 13),
                     "eye_donor_landmarks": (b, t, 68, 2), "eye_donor_clip_index": (b,)}.items():
        assert tuple(batch[k].shape) == shape, k
    for k in ("eye_donor", "eye_anchor", "window_frames", "augmented"):
        assert batch[k].dtype == torch.float32 and batch[k].min() >= -1 and batch[k].max() <= 1, k
    assert "negative_mel" not in batch
    assert torch.all(batch["eye_donor_clip_index"] != batch["clip_index"])
    # window centred on the middle target frame, clamped to the clip
    centre = batch["frame_index"][:, 2]
    assert torch.all(batch["window_index"][:, 6] == centre)
    assert torch.all((batch["window_index"][:, 1:] - batch["window_index"][:, :-1]) >= 0)
    # the anchor is the donor inside the eye mask and the base frame far from it
    from talkinghead.data.transforms import eye_region_mask

    mask = eye_region_mask(batch["eye_donor_landmarks"], s, s)  # (B, T, 1, H, W)
    inside, outside = mask > 0.999, mask < 1e-4
    anchor, donor, base = batch["eye_anchor"], batch["eye_donor"], batch["frames"]
    assert inside.any() and outside.any()
    assert torch.allclose(anchor.masked_select(inside), donor.masked_select(inside), atol=5e-3)
    assert torch.allclose(anchor.masked_select(outside), base.masked_select(outside), atol=5e-3)


def test_same_clip_eye_donor_is_the_same_clip_min_shift_away(tiny):
    root, _ = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=8, seed=3, samples_per_epoch=32,
                               **dict(PDFGC, eye_donor="same_clip", in_window=0, augment=None))
    for batch in batches(dm):
        assert torch.equal(batch["eye_donor_clip_index"], batch["clip_index"])
        shift = batch["eye_donor_frame_index"][:, 0] - batch["frame_index"][:, 0]
        assert shift.abs().min() >= 5
        assert not torch.equal(batch["eye_donor"], batch["frames"])
    with pytest.raises(ValueError, match="eye_donor"):
        TalkingHeadDataModule(store=str(root), batch_size=2, eye_pairs=True, eye_donor="same_person")


def test_determinism_across_workers_and_runs(tiny):
    root, _ = tiny
    cfg = dict(store=str(root), batch_size=4, seed=7, samples_per_epoch=10, **PCAVS, eye_pairs=True, in_window=5)
    a = batches(TalkingHeadDataModule(num_workers=0, **cfg))
    b = batches(TalkingHeadDataModule(num_workers=2, **cfg))
    c = batches(TalkingHeadDataModule(num_workers=2, persistent_workers=True, **cfg))
    assert [len(x["frames"]) for x in a] == [4, 4, 2]
    assert_same(a, b)
    assert_same(a, c)
    d = batches(TalkingHeadDataModule(num_workers=0, **{**cfg, "seed": 8}))
    assert not torch.equal(a[0]["frame_index"], d[0]["frame_index"]) or not torch.equal(a[0]["augmented"],
                                                                                       d[0]["augmented"])


def test_epochs_differ_and_validation_is_fixed(tiny):
    root, _ = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=5, seed=0, image_size=SIZE)
    e0 = batches(dm)
    v0 = batches(dm, "val")
    dm.set_epoch(1)
    e1 = batches(dm)
    v1 = batches(dm, "val")
    order0 = torch.cat([x["clip_index"] for x in e0])
    order1 = torch.cat([x["clip_index"] for x in e1])
    assert sorted(order0.tolist()) == sorted(order1.tolist()) == [0, 1, 2, 3, 4]  # one window per clip
    win0 = {int(c): int(f) for x in e0 for c, f in zip(x["clip_index"], x["frame_index"][:, 0])}
    win1 = {int(c): int(f) for x in e1 for c, f in zip(x["clip_index"], x["frame_index"][:, 0])}
    assert win0 != win1
    assert_same(v0, v1)
    dm.set_epoch(0)
    assert_same(e0, batches(dm))


def test_speakers(tiny):
    root, _ = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=8, num_references=0, image_size=SIZE)
    assert dm.speakers == ["id00001", "id00002", "id00003"] and dm.num_speakers == 3
    cs = store.ClipStore(root)
    for batch in batches(dm):
        for c, spk in zip(batch["clip_index"], batch["speaker"]):
            assert dm.speakers[int(spk)] == cs.clips()[int(c)]["speaker"]
    val = batches(dm, "val")
    assert torch.all(torch.cat([x["speaker"] for x in val]) == -1)  # unseen test speaker


def test_resize_scales_landmarks(tiny):
    root, made = tiny
    dm = TalkingHeadDataModule(store=str(root), batch_size=2, num_references=2, image_size=96)
    batch = next(iter(dm.val_dataloader()))
    assert batch["frames"].shape == (2, 5, 3, 96, 96) and batch["reference"].shape == (2, 2, 3, 96, 96)
    cs = store.ClipStore(root)
    entry = cs.clips()[int(batch["clip_index"][0])]
    lm = made[entry["clip_id"]]["landmarks"][batch["frame_index"][0].numpy()]
    np.testing.assert_allclose(batch["landmarks"][0].numpy(), (lm + 0.5) * 1.5 - 0.5, rtol=1e-5, atol=1e-4)


def test_short_clip_and_int_indexing(tmp_path):
    root = tmp_path / "store"
    make_store(root, [("a/x/1", "a", "train", 8), ("b/y/1", "b", "train", 6)], size=32, seed=3)
    ds = WindowDataset(store.ClipStore(root), [0, 1], TalkingHeadDataModule(
        store=str(root), window=5, num_references=3, num_shifted=1, image_size=32).sample_config)
    for k in range(6):
        s = ds[k]
        assert s["frames"].shape == (5, 3, 32, 32) and s["reference"].shape == (3, 3, 32, 32)
        assert s["negative_mel"].shape == (1, 5, 1, 80, 20)


def test_datamodule_from_shards(tiny, tmp_path):
    root, _ = tiny
    store.write_shards(root, tmp_path / "shards", num_workers=1, start_method="fork")
    cfg = dict(batch_size=4, seed=5, samples_per_epoch=8, **PCAVS)
    from_store = batches(TalkingHeadDataModule(store=str(root), **cfg))
    from_shards = batches(TalkingHeadDataModule(shards=str(tmp_path / "shards"), **cfg))
    from_shards_workers = batches(TalkingHeadDataModule(shards=str(tmp_path / "shards"), num_workers=2, **cfg))
    assert_same(from_store, from_shards)
    assert_same(from_store, from_shards_workers)
    dm = TalkingHeadDataModule(shards=str(tmp_path / "shards"), **cfg)
    assert dm.speakers == ["id00001", "id00002", "id00003"]
    assert len(batches(dm, "val")) == 1


@pytest.mark.filterwarnings("ignore:.*validation_step", "ignore:.*LeafSpec")
def test_epoch_follows_trainer(tiny):
    import lightning.pytorch as pl

    root, _ = tiny

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: dict[int, list[torch.Tensor]] = {}

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).append(batch["frame_index"])
            return (self.w * batch["mel"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    cfg = dict(store=str(root), batch_size=5, seed=4, num_references=0, image_size=SIZE)
    model = Recorder()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=TalkingHeadDataModule(**cfg))
    for epoch in (0, 1):
        alone = TalkingHeadDataModule(**cfg)
        alone.set_epoch(epoch)
        assert torch.equal(torch.cat(model.seen[epoch]), torch.cat([b["frame_index"] for b in batches(alone)]))
    assert not torch.equal(torch.cat(model.seen[0]), torch.cat(model.seen[1]))


def test_reference_span_audio_and_sequences_without_images(tiny):
    """Rhythmic Head's needs: a context of P frames right before the window (landmarks, poses, audio)
    with the references among them, raw audio around each target frame, and samples with no image
    read."""
    root, made = tiny
    cs = store.ClipStore(root)
    dm = TalkingHeadDataModule(store=str(root), batch_size=2, window=6, num_references=3, reference_span=12,
                               audio_samples=4480, image_size=32)
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (2, 6, 4480) and batch["reference_pose"].shape == (2, 3, 6)
    assert batch["context_audio"].shape == (2, 12, 4480) and batch["context_pose"].shape == (2, 12, 6)
    for i in range(2):
        entry = cs.clips()[int(batch["clip_index"][i])]
        arrays = made[entry["clip_id"]]
        refs, frames = batch["reference_index"][i].numpy(), batch["frame_index"][i].numpy()
        context = batch["context_index"][i].numpy()
        assert frames.min() >= 12 and np.array_equal(context, np.arange(frames[0] - 12, frames[0]))
        assert set(refs) <= set(context)
        np.testing.assert_allclose(batch["reference_landmarks"][i].numpy(),
                                   (arrays["landmarks"][refs] + 0.5) * 0.5 - 0.5, atol=1e-4)
        np.testing.assert_allclose(batch["context_landmarks"][i].numpy(),
                                   (arrays["landmarks"][context] + 0.5) * 0.5 - 0.5, atol=1e-4)
        np.testing.assert_array_equal(batch["reference_pose"][i].numpy(), arrays["pose"][refs])
        np.testing.assert_array_equal(batch["context_pose"][i].numpy(), arrays["pose"][context])
        wav, f = arrays["audio"], int(frames[0])
        start = f * 640 + 320 - 2240
        expected = np.zeros(4480, np.float32)
        lo, hi = max(start, 0), min(start + 4480, len(wav))
        expected[lo - start: hi - start] = wav[lo:hi]
        np.testing.assert_array_equal(batch["audio"][i, 0].numpy(), expected)
        # consecutive frames' windows overlap by 6 of 7 chunks: the last context window is the
        # first target window shifted by one chunk
        np.testing.assert_array_equal(batch["context_audio"][i, -1, 640:].numpy(), batch["audio"][i, 0, :-640].numpy())
    lean = TalkingHeadDataModule(store=str(root), batch_size=2, window=6, num_references=3, reference_span=12,
                                 audio_samples=4480, image_size=32, decode_frames=False)
    lean_batch = next(iter(lean.train_dataloader()))
    assert "frames" not in lean_batch and "reference" not in lean_batch
    for key in ("landmarks", "reference_landmarks", "pose", "audio", "mel", "context_pose", "context_audio"):
        assert torch.equal(lean_batch[key], batch[key]), key
    with pytest.raises(ValueError, match="decode_frames=False"):
        TalkingHeadDataModule(store=str(root), decode_frames=False, in_window=3)
