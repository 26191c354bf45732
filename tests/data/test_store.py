"""Tests for talkinghead.data.store: clip files, JPEG frames, index, ClipStore, LitData shards."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from talkinghead.data import store
from talkinghead.data.audio import mel_spectrogram

SIZE = 64


def smooth_frames(rng: np.random.Generator, t: int, size: int = SIZE) -> np.ndarray:
    """(T, size, size, 3) uint8: low-frequency colour fields that change over time."""
    coarse = rng.random((4, 4, 3)).astype(np.float32)
    drift = rng.random((4, 4, 3)).astype(np.float32)
    out = []
    for i in range(t):
        field = (coarse + 0.3 * np.sin(i / 3.0 + 6 * drift)).clip(0, 1)
        out.append(cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC))
    return (np.clip(np.stack(out), 0, 1) * 255).round().astype(np.uint8)


def clip_arrays(rng: np.random.Generator, t: int, size: int = SIZE, truth: bool = False) -> dict[str, np.ndarray]:
    frames = smooth_frames(rng, t, size)
    jpeg, offsets = store.encode_frames(frames)
    audio = (0.1 * np.sin(np.arange(t * 640) * rng.uniform(0.01, 0.1)) + 0.01 * rng.standard_normal(t * 640))
    audio = audio.astype(np.float32)
    lm = (rng.random((68, 2)) * 0.6 + 0.2) * size
    landmarks = (lm[None] + rng.normal(0, 0.5, (t, 68, 2))).astype(np.float32)
    arrays = {
        "frames": jpeg,
        "frame_offsets": offsets,
        "audio": audio,
        "mel": mel_spectrogram(audio).numpy(),
        "landmarks": landmarks,
        "landmarks_found": rng.random(t) > 0.1,
        "pose": rng.normal(0, 0.1, (t, 6)).astype(np.float32),
    }
    if truth:
        arrays["truth_landmarks"] = landmarks + 0.25
        arrays["truth_blink"] = rng.random(t).astype(np.float32)
        arrays["truth_viseme"] = rng.integers(0, 40, t).astype(np.int64)
    return arrays


def make_store(root, clips: list[tuple[str, str, str, int]], size: int = SIZE, truth: bool = False, seed: int = 0):
    """clips: (clip_id, speaker, split, num_frames). Returns {clip_id: (frames uint8, arrays)}."""
    rng = np.random.default_rng(seed)
    made = {}
    for clip_id, speaker, split, t in clips:
        arrays = clip_arrays(rng, t, size, truth)
        meta = {"dataset": "synthtalk", "clip_id": clip_id, "speaker": speaker, "split": split,
                "labels": {"k": 1}, "num_frames": t, "fps": 25, "sample_rate": 16000,
                "source_video": f"/raw/{clip_id}.mp4", "source_audio": None,
                "landmark_backend": "truth", "version": 1}
        store.write_clip(root, clip_id, arrays, meta)
        made[clip_id] = arrays
    store.build_index(root)
    return made


CLIPS = [
    ("id00001/vidA/00001", "id00001", "train", 30),
    ("id00002/vidB/00001", "id00002", "train", 24),
    ("id00003/vidC/00002", "id00003", "test", 20),
]


@pytest.fixture()
def tiny_store(tmp_path):
    made = make_store(tmp_path / "store", CLIPS, truth=True)
    return tmp_path / "store", made


# --------------------------------------------------------------------------------------- JPEG
def test_jpeg_round_trip_is_close():
    frames = smooth_frames(np.random.default_rng(1), 6)
    data, offsets = store.encode_frames(frames, quality=95)
    assert data.dtype == np.uint8 and data.ndim == 1
    assert offsets.dtype == np.int64 and offsets.shape == (7,) and offsets[0] == 0 and offsets[-1] == data.size
    decoded = store.decode_frames(data, offsets, range(6))
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    err = np.abs(decoded.astype(int) - frames.astype(int))
    assert err.mean() < 2.0 and err.max() < 40
    # RGB order is kept (a pure red frame stays red)
    red = np.zeros((1, 16, 16, 3), np.uint8)
    red[..., 0] = 255
    out = store.decode_frames(*store.encode_frames(red), [0])[0]
    assert out[..., 0].mean() > 240 and out[..., 1:].mean() < 15


def test_decode_touches_only_requested_frames():
    frames = smooth_frames(np.random.default_rng(2), 5)
    data, offsets = store.encode_frames(frames)
    broken = data.copy()
    for i in (0, 2, 4):  # destroy the frames we do not ask for
        broken[offsets[i]:offsets[i + 1]] = 0
    out = store.decode_frames(broken, offsets, [3, 1, 3])
    assert out.shape == (3, SIZE, SIZE, 3)
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], store.decode_frames(data, offsets, [1])[0])
    with pytest.raises(IndexError):
        store.decode_frames(data, offsets, [5])


# ------------------------------------------------------------------------------- write_clip
def test_write_clip_layout_and_meta(tiny_store):
    root, made = tiny_store
    path = store.clip_path(root, "id00001/vidA/00001")
    assert path == root / "clips" / "id00001__vidA__00001.npz"
    assert store.clip_exists(root, "id00001/vidA/00001")
    assert not store.clip_exists(root, "id00009/x/00001")
    assert sorted(p.name for p in (root / "clips").iterdir()) == sorted(
        f"{c[0].replace('/', '__')}.npz" for c in CLIPS)  # no temporary files left
    with np.load(path) as z:  # a plain npz: uncompressed members, meta as a JSON string
        meta = json.loads(str(z["meta"]))
        np.testing.assert_array_equal(z["landmarks"], made["id00001/vidA/00001"]["landmarks"])
    assert meta["clip_id"] == "id00001/vidA/00001" and meta["num_frames"] == 30
    assert store.read_clip_meta(path) == meta


def test_write_clip_failure_leaves_nothing(tmp_path, monkeypatch):
    arrays = clip_arrays(np.random.default_rng(3), 12)

    def boom(fh, **kw):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(store.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write_clip(tmp_path, "a/b/c", arrays, {"num_frames": 12})
    assert list((tmp_path / "clips").iterdir()) == []
    assert not store.clip_exists(tmp_path, "a/b/c")


def test_write_clip_checks(tmp_path):
    arrays = clip_arrays(np.random.default_rng(4), 10)
    with pytest.raises(ValueError, match="num_frames"):
        store.write_clip(tmp_path, "a/b", arrays, {"num_frames": 11})
    with pytest.raises(ValueError, match="reserved"):
        store.write_clip(tmp_path, "a/b", {**arrays, "meta": np.zeros(1)}, {})


# ------------------------------------------------------------------------------------ index
def test_build_index(tiny_store):
    root, _ = tiny_store
    (root / "clips" / ".id00004__v__1.tmp-123.npz").write_bytes(b"half a file")
    (root / "clips" / "zz_corrupt.npz").write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="zz_corrupt"):
        entries = store.build_index(root)
    assert [e["clip_id"] for e in entries] == sorted(c[0] for c in CLIPS)
    first = entries[0]
    assert first == {"clip_id": "id00001/vidA/00001", "file": "clips/id00001__vidA__00001.npz",
                     "dataset": "synthtalk", "speaker": "id00001", "split": "train", "num_frames": 30,
                     "labels": {"k": 1}}
    assert json.loads((root / "index.json").read_text()) == entries
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_clipstore_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no index.json in .*: run `talkinghead preprocess` first"):
        store.ClipStore(tmp_path)


def test_clipstore_reads_lazily(tiny_store, monkeypatch):
    root, made = tiny_store
    cs = store.ClipStore(root)
    assert len(cs) == 3 and [e["index"] for e in cs.clips()] == [0, 1, 2]
    assert [e["clip_id"] for e in cs.clips("test")] == ["id00003/vidC/00002"]
    assert cs.speakers("train") == ["id00001", "id00002"]
    assert cs.speaker_index() == {"id00001": 0, "id00002": 1}
    entry = cs.clips()[1]
    arrays = made[entry["clip_id"]]
    assert set(cs.keys(entry)) == set(arrays)
    got = cs.load(entry, ["mel", "pose", "truth_viseme", "landmarks_found"])
    assert set(got) == {"mel", "pose", "truth_viseme", "landmarks_found"}
    for k, v in got.items():
        np.testing.assert_array_equal(v, arrays[k])
        assert v.dtype == arrays[k].dtype and v.flags.writeable
    np.testing.assert_array_equal(cs.take_rows(1, "landmarks", [7, 2, 2]), arrays["landmarks"][[7, 2, 2]])
    assert cs.meta("id00002/vidB/00001")["num_frames"] == 24

    decoded = []
    real = store._decode_jpeg
    monkeypatch.setattr(store, "_decode_jpeg", lambda buf: decoded.append(buf.size) or real(buf))
    frames = cs.load_frames(entry, [5, 9, 5])
    assert frames.shape == (3, SIZE, SIZE, 3) and len(decoded) == 2  # only frames 5 and 9
    offsets = arrays["frame_offsets"]
    assert decoded == [int(offsets[6] - offsets[5]), int(offsets[10] - offsets[9])]
    ref = store.decode_frames(arrays["frames"], offsets, [5, 9])
    np.testing.assert_array_equal(frames[:2], ref)
    with pytest.raises(KeyError, match="no array 'nope'"):
        cs.load(entry, ["nope"])


# ----------------------------------------------------------------------------------- shards
@pytest.fixture(scope="module")
def shard_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards") / "store"
    made = make_store(root, CLIPS + [("id00004/vidD/00001", "id00004", "train", 22)], truth=True, seed=5)
    clips = store.write_shards(root, root / "shards", num_workers=1, chunk_bytes="100KB", start_method="fork")
    return root, made, clips


def test_shards_round_trip(shard_store):
    root, made, clips = shard_store
    out = root / "shards"
    assert (out / "index.json").is_file() and (out / "clips.json").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # temporary folder renamed away
    assert sorted(c["clip_id"] for c in clips) == sorted(made)
    assert store.read_shard_clips(out) == clips
    dataset = store.open_shards(out)
    assert len(dataset) == len(made)
    for i, entry in enumerate(clips):
        item = dataset[i]
        meta = json.loads(item["meta"])
        assert meta["clip_id"] == entry["clip_id"]
        arrays = made[entry["clip_id"]]
        assert set(item) - {"meta"} == set(arrays)
        for k, v in arrays.items():
            assert item[k].dtype == v.dtype and item[k].shape == v.shape, k
            np.testing.assert_array_equal(item[k], v)
    # ShardSource offers the ClipStore reading interface
    src = store.ShardSource(out)
    cid = clips[2]["clip_id"]
    np.testing.assert_array_equal(src.load(cid, ["pose"])["pose"], made[cid]["pose"])
    frames = src.load_frames(cid, [1, 3])
    ref = store.ClipStore(root).load_frames(cid, [1, 3])
    np.testing.assert_array_equal(frames, ref)
    assert src.speakers("train") == ["id00001", "id00002", "id00004"]
    with pytest.raises(FileExistsError):
        store.write_shards(root, out)


def test_shards_mixed_keys_and_split(tmp_path):
    root = tmp_path / "store"
    made = make_store(root, CLIPS[:2], truth=True, seed=6)
    extra = clip_arrays(np.random.default_rng(7), 16)  # no truth_* arrays
    store.write_clip(root, "id00005/vidE/00001", extra,
                     {"clip_id": "id00005/vidE/00001", "speaker": "id00005", "split": "train", "num_frames": 16})
    store.build_index(root)
    clips = store.write_shards(root, tmp_path / "train_shards", split="train", num_workers=1)
    assert len(clips) == 3
    src = store.ShardSource(tmp_path / "train_shards")
    assert "truth_blink" not in src.keys("id00005/vidE/00001")
    assert "truth_blink" in src.keys(CLIPS[0][0])
    np.testing.assert_array_equal(src.load(CLIPS[1][0], ["truth_viseme"])["truth_viseme"],
                                  made[CLIPS[1][0]]["truth_viseme"])
    assert not os.path.exists(tmp_path / ".train_shards.tmp-{}".format(os.getpid()))
