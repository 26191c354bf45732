"""Benchmark protocols: registry, deterministic clip selection, self- and cross-driven requests."""
from __future__ import annotations

import random

import numpy as np

import pytest
import torch

from talkinghead.bench.protocol import (
    PROTOCOLS,
    Protocol,
    frames_tensor,
    get_protocol,
    load_clip,
    protocol_names,
    rank_clips,
    select_clips,
    train_clips,
)


class FakeStore:
    """What select_clips needs of a ClipStore: clips(split) and a root."""

    root = "fake-store"

    def __init__(self, entries):
        self.entries = entries

    def clips(self, split=None):
        return [e for e in self.entries if split is None or e["split"] == split]


def _entry(clip_id, split="test", speaker=None, frames=40, **labels):
    return {"clip_id": clip_id, "split": split, "speaker": speaker or clip_id.split("/")[0], "num_frames": frames,
            "labels": labels}


def test_registry_and_overrides():
    assert {"synth", "synth-mead", "synth-pose", "vox2", "lrw", "mead", "mead-cross"} <= set(protocol_names())
    synth = get_protocol("synth")
    assert synth.store == "data/store/synth-vox2" and synth.setting == "self" and synth.split == "test"
    assert synth.published is None and PROTOCOLS["vox2"].published == "vox2" and PROTOCOLS["lrw"].published == "lrw"
    assert PROTOCOLS["mead-cross"].setting == "cross"
    changed = get_protocol("vox2", store="/elsewhere", num_clips=7, setting="cross", split=None)
    assert (changed.store, changed.num_clips, changed.setting, changed.split) == ("/elsewhere", 7, "cross", "test")
    assert PROTOCOLS["vox2"].store == "data/store/vox2"  # the registered protocol is untouched
    with pytest.raises(KeyError, match="unknown protocol 'vox3'; choose from: .*lrw.*synth.*vox2"):
        get_protocol("vox3")
    with pytest.raises(ValueError, match="setting must be one of"):
        get_protocol("synth", setting="sideways")


def test_rank_clips_is_deterministic_and_order_independent():
    entries = [_entry(f"id{i:05d}/v/00001") for i in range(30)]
    chosen = rank_clips(entries, 8, seed=0)
    shuffled = entries[:]
    random.Random(1).shuffle(shuffled)
    assert rank_clips(shuffled, 8, seed=0) == chosen
    assert [e["clip_id"] for e in chosen] == sorted(e["clip_id"] for e in chosen) and len(chosen) == 8
    assert rank_clips(entries, 8, seed=1) != chosen  # the seed matters
    assert len(rank_clips(entries, 100)) == 30
    # adding clips to a store only lets new clips rank in: the old ones still chosen were chosen before
    extra = [_entry(f"new{i:03d}/v/00001") for i in range(50)]
    bigger = rank_clips(entries + extra, 8, seed=0)
    old_still_in = [e for e in bigger if not e["clip_id"].startswith("new")]
    assert all(e in chosen for e in old_still_in) and len(old_still_in) < 8


def test_select_clips_split_count_and_min_frames():
    entries = ([_entry(f"id{i:05d}/v/00001", "test") for i in range(10)] + [_entry("short/v/00001", frames=5)]
               + [_entry(f"tr{i:03d}/v/00001", "train") for i in range(5)])
    store = FakeStore(entries)
    selections, split = select_clips(store, get_protocol("synth", num_clips=4))
    assert split == "test" and len(selections) == 4
    assert all(s.entry["split"] == "test" and s.setting == "self" for s in selections)
    assert all(s.source is s.entry and s.cross_sources == () for s in selections)
    again, _ = select_clips(FakeStore(list(reversed(entries))), get_protocol("synth", num_clips=4))
    assert [s.clip_id for s in again] == [s.clip_id for s in selections]
    everything, _ = select_clips(store, get_protocol("synth", num_clips=100))
    assert "short/v/00001" not in {s.clip_id for s in everything} and len(everything) == 10
    assert [e["split"] for e in train_clips(store, get_protocol("synth"), 3)] == ["train"] * 3


def test_select_clips_fallback_and_error():
    mead = FakeStore([_entry(f"M00{i}/front/happy/level_1/001", "train", emotion="happy") for i in range(3)])
    with pytest.warns(UserWarning, match="no usable clip in split 'test'; evaluating split 'train'"):
        selections, split = select_clips(mead, get_protocol("mead"))
    assert split == "train" and len(selections) == 3
    with pytest.raises(ValueError, match="no clip with >= 12 frames in split.*test.*the store has splits: train"):
        select_clips(mead, get_protocol("synth"))


def test_cross_setting_picks_another_emotion_and_speaker():
    entries = [
        _entry("M001/front/happy/level_1/001", speaker="M001", emotion="happy"),
        _entry("M001/front/sad/level_1/001", speaker="M001", emotion="sad"),
        _entry("M002/front/happy/level_1/001", speaker="M002", emotion="happy"),
        _entry("M002/front/angry/level_2/001", speaker="M002", emotion="angry"),
        _entry("W003/front/neutral/level_1/001", speaker="W003", emotion="neutral"),
    ]
    protocol = get_protocol("mead-cross", num_clips=5)
    selections, _ = select_clips(FakeStore(entries), protocol)
    for s in selections:
        source = s.source
        assert s.setting == "cross" and source["clip_id"] != s.clip_id
        assert s.cross_sources == ("pose", "eye", "emotion") and s.cross_frames == "first"
        assert source["labels"]["emotion"] != s.entry["labels"]["emotion"]
        assert source["speaker"] != s.entry["speaker"]  # another speaker is available for every clip here
    again, _ = select_clips(FakeStore(entries[::-1]), protocol)
    assert [(s.clip_id, s.source["clip_id"]) for s in again] == [(s.clip_id, s.source["clip_id"]) for s in selections]
    # without emotion labels (vox2) any other clip is used, preferably another speaker
    vox = FakeStore([_entry("id1/a/1"), _entry("id1/a/2", speaker="id1"), _entry("id2/b/1")])
    chosen, _ = select_clips(vox, get_protocol("synth", setting="cross"))
    assert all(s.source["speaker"] != s.entry["speaker"] for s in chosen)
    with pytest.raises(ValueError, match="needs another clip"):
        select_clips(FakeStore([_entry("id1/a/1")]), get_protocol("synth", setting="cross"))


def test_load_clip_self_driven(synth_vox2_store):
    from talkinghead.data.store import ClipStore

    store = ClipStore(synth_vox2_store)
    (selection,), split = select_clips(store, get_protocol("synth", store=str(synth_vox2_store)))
    assert split == "test" and selection.entry["split"] == "test"
    data = load_clip(store, selection)
    request = data.request
    frames = data.real_frames
    assert frames.shape == (40, 3, 224, 224) and frames.dtype == torch.float32 and 0 <= frames.min() <= frames.max() <= 1
    assert torch.equal(request.reference, frames[0])
    assert request.pose_source is frames and request.eye_source is frames and request.emotion_source is frames
    assert request.num_frames == 40 and request.setting == "self" and request.source_clip_id == selection.clip_id
    assert request.audio.ndim == 1 and abs(len(request.audio) - 40 * 640) <= 640
    assert request.ground_truth is None  # the harness fills it for the ground_truth baseline only
    assert data.real is not frames and torch.equal(data.real, frames) and data.real_landmarks.shape == (40, 68, 2)
    assert data.file.endswith(".npz")
    inputs = data.metric_inputs(frames)
    assert set(inputs) == {"fake", "real", "audio", "reference", "real_landmarks", "pose_landmarks", "driver_truth",
                           "emotion_targets", "emotion_target"}
    assert inputs["emotion_targets"] is None and inputs["emotion_target"] is None  # self-driven, no labels
    truth = store.load(selection.entry, ["truth_mouth", "truth_pose", "truth_blink", "truth_gaze"])
    expected = np.column_stack([truth["truth_mouth"][:, 0], truth["truth_pose"][:, :3], truth["truth_blink"],
                                truth["truth_gaze"]])
    np.testing.assert_allclose(data.driver_truth.numpy(), expected[:40], rtol=1e-6)
    # self-driven, the pose source is the clip itself: its landmarks are the real ones
    assert data.pose_clip_id == selection.clip_id and torch.equal(data.pose_frame_index, torch.arange(40))
    assert torch.allclose(inputs["pose_landmarks"], data.real_landmarks, equal_nan=True)


def test_load_clip_cross_driven(synth_vox2_store):
    from talkinghead.data.store import ClipStore

    store = ClipStore(synth_vox2_store)
    protocol = get_protocol("synth", store=str(synth_vox2_store), split="train", setting="cross", num_clips=1)
    (selection,), _ = select_clips(store, protocol)
    data = load_clip(store, selection)
    assert data.real is None and data.real_landmarks is None
    request = data.request
    assert request.source_clip_id == selection.source["clip_id"] != selection.clip_id
    first = frames_tensor(store.load_frames(selection.source, [0]))[0]
    for source in (request.pose_source, request.eye_source, request.emotion_source):
        assert source.shape == data.real_frames.shape
        assert torch.equal(source[0], first) and torch.equal(source[-1], first)  # PD-FGC: first frame, held
    assert torch.equal(request.reference, data.real_frames[0])  # identity and audio stay the clip's own

    # only the expression from the other clip, played frame by frame
    protocol = protocol.replace(cross_sources=("emotion",), cross_frames="all")
    (selection,), _ = select_clips(store, protocol)
    request = load_clip(store, selection).request
    assert torch.equal(request.pose_source, load_clip(store, selection).real_frames)
    assert not torch.equal(request.emotion_source[0], request.emotion_source[-1])


def test_protocol_validation():
    with pytest.raises(ValueError, match="num_clips must be >= 1"):
        Protocol("x", "vox2", "s", num_clips=0)
    with pytest.raises(ValueError, match="cross_sources must be"):
        Protocol("x", "vox2", "s", cross_sources=("lips",))
    with pytest.raises(ValueError, match="cross_frames must be"):
        Protocol("x", "vox2", "s", cross_frames="middle")
    assert PROTOCOLS["mead"].train_store == "data/store/vox2" and PROTOCOLS["vox2"].num_clips == 500


def test_synth_pose_protocol_selects_another_speaker_for_the_pose_only():
    protocol = PROTOCOLS["synth-pose"]
    assert (protocol.dataset, protocol.store, protocol.split, protocol.setting) == (
        "vox2", "data/store/synth-vox2", "test", "cross")
    assert protocol.cross_sources == ("pose",) and protocol.cross_frames == "all"
    assert "pose" in protocol.description
    # a vox2 store has no emotion labels: any other clip, another speaker when there is one
    vox = FakeStore([_entry("id1/a/1"), _entry("id1/a/2", speaker="id1"), _entry("id2/b/1"), _entry("id3/c/1")])
    selections, split = select_clips(vox, protocol)
    assert split == "test" and len(selections) == 4
    for s in selections:
        assert s.setting == "cross" and s.cross_sources == ("pose",) and s.cross_frames == "all"
        assert s.source["speaker"] != s.entry["speaker"]


def _store_landmarks(store, entry):
    arrays = store.load(entry, ["landmarks", "landmarks_found"])
    landmarks = torch.from_numpy(arrays["landmarks"].astype("float32"))
    landmarks[~torch.from_numpy(arrays["landmarks_found"].astype(bool))] = float("nan")
    return landmarks


def test_pose_landmarks_follow_the_pose_source(synth_vox2_store):
    """synth-pose: pose from the other clip frame by frame, the rest from the clip itself."""
    from talkinghead.data.store import ClipStore

    store = ClipStore(synth_vox2_store)
    protocol = get_protocol("synth-pose", store=str(synth_vox2_store), split="train", num_clips=1)
    (selection,), _ = select_clips(store, protocol)
    source = selection.source
    assert source["clip_id"] != selection.clip_id and source["speaker"] != selection.entry["speaker"]
    data = load_clip(store, selection)
    request = data.request
    count = request.num_frames
    assert data.real is None and data.real_landmarks is None  # cross-driven: no ground truth
    assert torch.equal(request.eye_source, data.real_frames) and torch.equal(request.emotion_source, data.real_frames)
    n = int(source["num_frames"])
    index = torch.clamp(torch.arange(count), max=n - 1)
    assert torch.equal(request.pose_source, frames_tensor(store.load_frames(source, range(n)))[index])
    assert data.pose_clip_id == source["clip_id"] and torch.equal(data.pose_frame_index, index)
    expected = _store_landmarks(store, source)[index]
    inputs = data.metric_inputs(data.real_frames)
    assert inputs["pose_landmarks"].shape == (count, 68, 2) and inputs["real_landmarks"] is None
    assert torch.allclose(inputs["pose_landmarks"], expected, equal_nan=True)
    assert not torch.allclose(expected, _store_landmarks(store, selection.entry)[:count], equal_nan=True)

    # the driver truth: the pose columns from the pose source, mouth and eyes from the clip itself
    own_truth = store.load(selection.entry, ["truth_mouth", "truth_blink"])
    source_pose = store.load(source, ["truth_pose"])["truth_pose"][index.numpy()]
    np.testing.assert_allclose(data.driver_truth[:, 1:4].numpy(), source_pose[:, :3], rtol=1e-6)
    np.testing.assert_allclose(data.driver_truth[:, 0].numpy(), own_truth["truth_mouth"][:count, 0], rtol=1e-6)
    np.testing.assert_allclose(data.driver_truth[:, 4].numpy(), own_truth["truth_blink"][:count], rtol=1e-6)

    # the first frame held (PD-FGC): its landmarks repeated
    held = load_clip(store, select_clips(store, protocol.replace(cross_frames="first"))[0][0])
    assert torch.equal(held.pose_frame_index, torch.zeros(count, dtype=torch.long))
    assert torch.allclose(held.pose_landmarks, expected[:1].expand(count, -1, -1), equal_nan=True)

    # a cross protocol whose pose is not among its sources: the clip's own landmarks
    own = load_clip(store, select_clips(store, protocol.replace(cross_sources=("emotion",)))[0][0])
    assert own.pose_clip_id == selection.clip_id
    assert torch.allclose(own.pose_landmarks, _store_landmarks(store, selection.entry)[:count], equal_nan=True)


def test_emotion_source_brings_the_speakers_emotion_targets(synth_vox2_store):
    """A labelled store (MEAD-like): the emotion driver's row among the speaker's clips per emotion."""
    from talkinghead.data.store import ClipStore

    class Labelled:
        """The fixture store with every clip relabelled as one speaker's emotions."""

        def __init__(self, inner):
            self.inner, self.root = inner, str(inner.root) + "#labelled"
            emotions = ["angry", "happy", "sad", "neutral"]
            self.entries = [dict(e, speaker="S", split="train",
                                 labels={"emotion": emotions[i % 4], "level": 1, "view": "front"})
                            for i, e in enumerate(sorted(inner.clips(), key=lambda e: e["clip_id"]))]

        def clips(self, split=None):
            return [e for e in self.entries if split is None or e["split"] == split]

        def __getattr__(self, name):  # load, load_frames, has, path: the inner store's
            return getattr(self.inner, name)

    store = Labelled(ClipStore(synth_vox2_store))
    protocol = get_protocol("synth-emotion", store="unused", split="train", num_clips=1)
    (selection,), _ = select_clips(store, protocol)
    data = load_clip(store, selection)
    names = sorted({e["labels"]["emotion"] for e in store.entries})
    assert data.emotion_targets.shape == (len(names), 5) and torch.isfinite(data.emotion_targets).all()
    assert int(data.emotion_target) == names.index(selection.source["labels"]["emotion"])
    assert selection.source["labels"]["emotion"] != selection.entry["labels"]["emotion"]
    inputs = data.metric_inputs(data.real_frames)
    assert inputs["emotion_targets"] is data.emotion_targets
