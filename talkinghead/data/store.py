"""The processed clip store: one uncompressed `.npz` per clip, an index, and LitData shards.

Layout of a store folder::

    <store>/clips/<safe>.npz     one clip (safe = clip_id with '/' -> '__')
    <store>/index.json           [{clip_id, file, dataset, speaker, split, num_frames, labels}]
    <store>/report.json          written by `talkinghead.data.preprocess`
    <store>/shards/              optional LitData shards of the same clips (`write_shards`)

Arrays of a clip (written by preprocess; T video frames at 25 fps, N audio samples at 16 kHz):

    frames          uint8 (total_bytes,)  concatenated JPEG bytes of the aligned 224x224 RGB frames
    frame_offsets   int64 (T+1,)          frame i is frames[frame_offsets[i]:frame_offsets[i+1]]
    audio           float32 (N,)          mono in [-1, 1], not normalised
    mel             float32 (80, M)       `audio.mel_spectrogram(audio)`, in [0, 1]
    landmarks       float32 (T, 68, 2)    dlib-68 (x, y) in aligned 224-px coordinates
    landmarks_found bool (T,)             False where the detector found no face (tracked or interpolated)
    landmarks_tracked bool (T,)           True where the detector missed and the face was tracked from
                                          its neighbours (`faces.track_missing`)
    pose            float32 (T, 6)        rotation vector (rad), tx, ty (px), log scale
    truth_*         optional SynthTalk ground truth: truth_landmarks (T, 68, 2) aligned coords,
                    truth_pose (T, 6) in the aligned frames as `pose`, truth_mouth (T, 3), truth_blink (T,), truth_gaze (T, 2),
                    truth_viseme (T,)
    meta            0-d unicode array: JSON of {dataset, clip_id, speaker, split, labels,
                    num_frames, fps, sample_rate, source_video, source_audio,
                    landmark_backend, version, ...}

Files are written uncompressed (the frames are already JPEG), so every member sits at a fixed
byte offset in the file: `ClipStore` reads exactly the bytes it is asked for (one member, a few
rows of one, or a few JPEG frames) with `os.preadv`, never the whole clip.

Writers are atomic (temporary name in the same folder, then `os.replace`), so a killed job
leaves no partial clip, index or shard folder behind.

LitData shards (`write_shards` / `open_shards` / `ShardSource`) hold one item per clip: the same
arrays plus `meta` (JSON string). They are the path for VoxCeleb2-size corpora streamed across
many workers / nodes. The shard folder also holds `clips.json`, the clip list in item order, so
the data module can sample windows without reading any item first.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from talkinghead.fileio import atomic_write, atomic_write_text

__all__ = [
    "CLIPS_DIR",
    "INDEX_FILE",
    "SHARD_CLIPS_FILE",
    "ClipStore",
    "NpzReader",
    "ShardSource",
    "build_index",
    "clip_exists",
    "clip_path",
    "decode_frames",
    "encode_frames",
    "open_shards",
    "read_clip_meta",
    "safe_name",
    "write_clip",
    "write_shards",
]

CLIPS_DIR = "clips"
INDEX_FILE = "index.json"
SHARD_CLIPS_FILE = "clips.json"
#: Fields of an index entry (index.json / clips.json); ClipStore adds `index` (position) in memory.
ENTRY_FIELDS = ("clip_id", "file", "dataset", "speaker", "split", "num_frames", "labels")

_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11 decodes straight to RGB


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------
def safe_name(clip_id: str) -> str:
    """File stem of a clip: clip_id with '/' replaced by '__'."""
    if not clip_id or clip_id.startswith(".") or "\\" in clip_id or "\0" in clip_id:
        raise ValueError(f"invalid clip_id {clip_id!r}")
    return clip_id.replace("/", "__")


def clip_path(store_root: str | Path, clip_id: str) -> Path:
    """`<store>/clips/<safe>.npz` for `clip_id`."""
    return Path(store_root) / CLIPS_DIR / f"{safe_name(clip_id)}.npz"


def clip_exists(store_root: str | Path, clip_id: str) -> bool:
    """Whether the final (complete) file of `clip_id` is in the store (resumable preprocessing)."""
    return clip_path(store_root, clip_id).is_file()


# ---------------------------------------------------------------------------------------------
# JPEG frames
# ---------------------------------------------------------------------------------------------
def encode_frames(frames: np.ndarray, quality: int = 95) -> tuple[np.ndarray, np.ndarray]:
    """JPEG-encode RGB frames uint8 (T, H, W, 3).

    Returns (bytes_array uint8 (total_bytes,), offsets int64 (T+1,)): frame i is
    bytes_array[offsets[i]:offsets[i+1]] (OpenCV / libjpeg, 4:2:0, `quality` 0-100).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]
    chunks: list[np.ndarray] = []
    offsets = np.zeros(len(frames) + 1, np.int64)
    for i, frame in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for frame {i}")
        buf = buf.reshape(-1)
        chunks.append(buf)
        offsets[i + 1] = offsets[i] + buf.size
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return data.astype(np.uint8, copy=False), offsets


def _decode_jpeg(buf: np.ndarray) -> np.ndarray:
    if _IMREAD_RGB is not None:
        img = cv2.imdecode(buf, _IMREAD_RGB)
        if img is None:
            raise ValueError("corrupt JPEG frame")
        return img
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("corrupt JPEG frame")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _check_indices(indices, num_frames: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_frames):
        raise IndexError(f"frame indices {idx.min()}..{idx.max()} outside a clip of {num_frames} frames")
    return idx


def _stack_frames(images: list[np.ndarray]) -> np.ndarray:
    if not images:
        return np.zeros((0, 0, 0, 3), np.uint8)
    try:
        return np.stack(images)
    except ValueError as exc:
        raise ValueError("frames of one clip differ in size") from exc


def decode_frames(bytes_array: np.ndarray, offsets: np.ndarray, indices: Iterable[int]) -> np.ndarray:
    """Decode only frames `indices` (repeats allowed) of an `encode_frames` result.

    Returns uint8 (len(indices), H, W, 3) RGB.
    """
    offsets = np.asarray(offsets)
    data = np.asarray(bytes_array, dtype=np.uint8).reshape(-1)
    idx = _check_indices(indices, len(offsets) - 1)
    cache: dict[int, np.ndarray] = {}
    images = []
    for i in idx.tolist():
        if i not in cache:
            cache[i] = _decode_jpeg(data[int(offsets[i]):int(offsets[i + 1])])
        images.append(cache[i])
    return _stack_frames(images)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _to_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_clip(store_root: str | Path, clip_id: str, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write one clip to `<store>/clips/<safe>.npz`, atomically; returns the final path.

    `arrays`: the clip's arrays (module docstring); `meta`: a JSON-serialisable dict, stored as
    the `meta` member (a JSON string). Written uncompressed to a hidden `.<safe>.tmp-<random>.npz` in the
    same folder, then `os.replace`d onto the final name; on any failure the temporary file is
    removed and the error re-raised, so only complete clips ever carry the final name.
    """
    if "meta" in arrays:
        raise ValueError("'meta' is reserved for the clip's JSON metadata; pass it as `meta`")
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(f"{clip_id}: array {key!r} has dtype object (not storable without pickle)")
        out[key] = np.ascontiguousarray(arr)
    if "frame_offsets" in out and "frames" in out:
        offsets = out["frame_offsets"]
        if offsets.ndim != 1 or offsets[-1] != out["frames"].size:
            raise ValueError(f"{clip_id}: frame_offsets do not match the frames' byte count")
        if "num_frames" in meta and int(meta["num_frames"]) != len(offsets) - 1:
            raise ValueError(f"{clip_id}: meta num_frames {meta['num_frames']} != {len(offsets) - 1} frames")
    meta = dict(_to_json(meta))
    meta.setdefault("clip_id", clip_id)
    if meta["clip_id"] != clip_id:
        raise ValueError(f"meta clip_id {meta['clip_id']!r} != {clip_id!r}")
    out["meta"] = np.array(json.dumps(meta, sort_keys=True))

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **out)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(clip_path(store_root, clip_id), save)


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


# ---------------------------------------------------------------------------------------------
# reading one clip file (lazy, byte-exact)
# ---------------------------------------------------------------------------------------------
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header (30 bytes)


class NpzReader:
    """Lazy reader of an uncompressed `.npz`: each member is read with one `preadv` at its offset.

    Member offsets come from the zip directory and the `.npy` headers, parsed on first use. The
    file is opened lazily and re-opened after a fork (a DataLoader worker gets its own handle);
    pickling drops the handle. Members that cannot be located (compressed archives) fall back to
    `np.load`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None
        self._pid: int | None = None
        self._members: dict[str, tuple[int, tuple[int, ...], np.dtype, bool] | None] | None = None

    # -- plumbing
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_pid"] = None
        return state

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
        self._pid = None

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def _index(self) -> dict:
        if self._members is None:
            self._members = self._scan()
        return self._members

    def _scan(self) -> dict:
        members: dict[str, tuple[int, tuple[int, ...], np.dtype, bool] | None] = {}
        try:
            with open(self.path, "rb") as fh, zipfile.ZipFile(fh) as zf:
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    key = info.filename[: -len(".npy")]
                    if info.compress_type != zipfile.ZIP_STORED:
                        members[key] = None
                        continue
                    fh.seek(info.header_offset)
                    header = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
                    if header[0] != b"PK\x03\x04":
                        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
                    fh.seek(info.header_offset + _LOCAL_HEADER.size + header[9] + header[10])
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        members[key] = None
                        continue
                    members[key] = None if dtype.hasobject else (fh.tell(), tuple(shape), dtype, bool(fortran))
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise OSError(f"{self.path}: unreadable clip file ({exc})") from exc
        return members

    # -- reading
    def keys(self) -> list[str]:
        """Member names (arrays and `meta`)."""
        return list(self._index())

    def __contains__(self, key: str) -> bool:
        return key in self._index()

    def _member(self, key: str):
        members = self._index()
        if key not in members:
            raise KeyError(f"{self.path}: no array {key!r} (has: {', '.join(sorted(members))})")
        return members[key]

    def _pread_into(self, arr: np.ndarray, offset: int) -> np.ndarray:
        nbytes = arr.nbytes
        if nbytes == 0:
            return arr
        view = memoryview(arr.reshape(-1).view(np.uint8))
        fd = self._handle()
        done = 0
        while done < nbytes:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(f"{self.path}: file truncated (wanted {nbytes} bytes at offset {offset})")
            done += n
        return arr

    def read(self, key: str) -> np.ndarray:
        """The whole array `key` (a fresh, writable array)."""
        member = self._member(key)
        if member is None:
            with np.load(self.path, allow_pickle=False) as z:
                return np.array(z[key])
        offset, shape, dtype, fortran = member
        if fortran:
            flat = self._pread_into(np.empty(int(np.prod(shape, dtype=np.int64)), dtype), offset)
            return flat.reshape(shape, order="F")
        return self._pread_into(np.empty(shape, dtype), offset)

    def shape(self, key: str) -> tuple[int, ...]:
        member = self._member(key)
        if member is None:
            return tuple(self.read(key).shape)
        return member[1]

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) along the first axis of `key` (only those bytes are read)."""
        member = self._member(key)
        if member is None or member[3] or len(member[1]) == 0:
            return self.read(key)[start:stop]
        offset, shape, dtype, _ = member
        start, stop, _ = slice(start, stop).indices(shape[0])
        stop = max(start, stop)
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        arr = np.empty((stop - start, *shape[1:]), dtype)
        return self._pread_into(arr, offset + start * row)

    def take_rows(self, key: str, indices: Sequence[int]) -> np.ndarray:
        """Rows `indices` of `key`: reads the span they cover, then selects."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self.shape(key)[0]
        if idx.size == 0:
            return self.read_rows(key, 0, 0)
        if idx.min() < 0 or idx.max() >= n:
            raise IndexError(f"{self.path}: rows {idx.min()}..{idx.max()} of {key!r} outside 0..{n - 1}")
        lo, hi = int(idx.min()), int(idx.max()) + 1
        return self.read_rows(key, lo, hi)[idx - lo]

    def meta(self) -> dict:
        return json.loads(str(self.read("meta")[()]))

    def frames(self, indices: Iterable[int]) -> np.ndarray:
        """Decode JPEG frames `indices`, reading only their bytes: uint8 (n, H, W, 3) RGB."""
        offsets = self.read("frame_offsets")
        idx = _check_indices(indices, len(offsets) - 1)
        member = self._member("frames")
        if member is None:
            return decode_frames(self.read("frames"), offsets, idx)
        base = member[0]
        cache: dict[int, np.ndarray] = {}
        images = []
        for i in idx.tolist():
            if i not in cache:
                buf = np.empty(int(offsets[i + 1] - offsets[i]), np.uint8)
                cache[i] = _decode_jpeg(self._pread_into(buf, base + int(offsets[i])))
            images.append(cache[i])
        return _stack_frames(images)


def read_clip_meta(path: str | Path) -> dict:
    """The `meta` dict of one clip file (reads only that member)."""
    reader = NpzReader(path)
    try:
        return reader.meta()
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------
# index
# ---------------------------------------------------------------------------------------------
def _entry(meta: dict, file: str) -> dict:
    return {
        "clip_id": meta["clip_id"],
        "file": file,
        "dataset": meta.get("dataset"),
        "speaker": meta.get("speaker"),
        "split": meta.get("split"),
        "num_frames": int(meta.get("num_frames", 0)),
        "labels": meta.get("labels") or {},
    }


def build_index(store_root: str | Path) -> list[dict]:
    """Scan `<store>/clips/*.npz` (reading only each file's `meta`) and write `index.json`.

    Entries {clip_id, file (relative to the store), dataset, speaker, split, num_frames, labels}
    sorted by clip_id; written atomically; returned. Temporary files are ignored; an unreadable
    file is skipped with a warning (it is not a complete clip).
    """
    root = Path(store_root)
    folder = root / CLIPS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no clips folder (is {root} a clip store?)")
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix != ".npz" or not path.is_file():
            continue
        try:
            meta = read_clip_meta(path)
            entries.append(_entry(meta, f"{CLIPS_DIR}/{path.name}"))
        except (OSError, KeyError, ValueError) as exc:
            warnings.warn(f"{path}: skipped while indexing ({exc})", stacklevel=2)
    entries.sort(key=lambda e: e["clip_id"])
    _atomic_json(root / INDEX_FILE, entries)
    return entries


class _LRU:
    """Tiny per-process LRU (resets itself after a fork)."""

    def __init__(self, size: int):
        self.size = max(1, int(size))
        self._pid = os.getpid()
        self._data: OrderedDict = OrderedDict()

    def get(self, key, make):
        if self._pid != os.getpid():
            self._data = OrderedDict()
            self._pid = os.getpid()
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        value = make()
        self._data[key] = value
        while len(self._data) > self.size:
            _, old = self._data.popitem(last=False)
            close = getattr(old, "close", None)
            if close is not None:
                close()
        return value

    def __getstate__(self) -> dict:
        return {"size": self.size, "_pid": None, "_data": OrderedDict()}


class _Catalog:
    """What ClipStore and ShardSource share: the clip list and speaker vocabulary."""

    entries: list[dict]

    def __len__(self) -> int:
        return len(self.entries)

    def clips(self, split: str | None = None) -> list[dict]:
        """Index entries (each with `index`, its position in the store), optionally of one split."""
        return [e for e in self.entries if split is None or e["split"] == split]

    def speakers(self, split: str | None = "train") -> list[str]:
        """Sorted speaker vocabulary of `split` (all splits if None)."""
        return sorted({e["speaker"] for e in self.clips(split)})

    def speaker_index(self, split: str | None = "train") -> dict[str, int]:
        """speaker -> position in `speakers(split)`."""
        return {s: i for i, s in enumerate(self.speakers(split))}

    def entry(self, entry: dict | int | str) -> dict:
        """An index entry from itself, its position or its clip_id."""
        if isinstance(entry, dict):
            return entry
        if isinstance(entry, (int, np.integer)):
            return self.entries[int(entry)]
        if isinstance(entry, str):
            if not hasattr(self, "_by_id"):
                self._by_id = {e["clip_id"]: e for e in self.entries}
            try:
                return self._by_id[entry]
            except KeyError:
                raise KeyError(f"no clip {entry!r} in {self}") from None
        raise TypeError(f"entry must be a dict, position or clip_id, got {type(entry).__name__}")


class ClipStore(_Catalog):
    """Read access to a clip store folder (needs its `index.json`, see `build_index`).

    `clips(split)` lists entries; `load(entry, keys)` reads only the named arrays;
    `load_frames(entry, indices)` decodes only those frames; `take_rows(entry, key, indices)`
    reads the rows of a per-frame array. Open files are kept per process (LRU of `cache_size`),
    opened lazily, so a ClipStore can be handed to DataLoader workers.
    """

    def __init__(self, root: str | Path, cache_size: int = 64):
        self.root = Path(root)
        index = self.root / INDEX_FILE
        if not index.is_file():
            raise FileNotFoundError(f"no index.json in {self.root}: run `talkinghead preprocess` first")
        entries = json.loads(index.read_text())
        self.entries = [dict(e, index=i) for i, e in enumerate(entries)]
        self._readers = _LRU(cache_size)

    def __repr__(self) -> str:
        return f"ClipStore({str(self.root)!r}, {len(self)} clips)"

    def path(self, entry: dict | int | str) -> Path:
        return self.root / self.entry(entry)["file"]

    def reader(self, entry: dict | int | str) -> NpzReader:
        entry = self.entry(entry)
        return self._readers.get(entry["file"], lambda: NpzReader(self.root / entry["file"]))

    def keys(self, entry: dict | int | str) -> list[str]:
        """Array names of a clip (without `meta`)."""
        return [k for k in self.reader(entry).keys() if k != "meta"]

    def meta(self, entry: dict | int | str) -> dict:
        return self.reader(entry).meta()

    def load(self, entry: dict | int | str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays `keys` (all arrays if None) of a clip; nothing else is read."""
        reader = self.reader(entry)
        keys = self.keys(entry) if keys is None else list(keys)
        return {k: reader.read(k) for k in keys}

    def load_frames(self, entry: dict | int | str, indices: Iterable[int]) -> np.ndarray:
        """Decode only frames `indices`: uint8 (n, H, W, 3) RGB."""
        return self.reader(entry).frames(indices)

    def take_rows(self, entry: dict | int | str, key: str, indices: Sequence[int]) -> np.ndarray:
        """`array[indices]` of a per-frame array, reading only the rows' span."""
        return self.reader(entry).take_rows(key, indices)

    def has(self, entry: dict | int | str, key: str) -> bool:
        return key in self.reader(entry)


# ---------------------------------------------------------------------------------------------
# LitData shards
# ---------------------------------------------------------------------------------------------
def _shard_item(store_root: str, files: Sequence[str], keys: Sequence[str], fills: dict, position: int) -> dict:
    """optimize() fn: clip `position` -> {'meta': JSON string, <array>: ndarray, ...}."""
    reader = NpzReader(Path(store_root) / files[position])
    try:
        meta = reader.meta()
        present = set(reader.keys())
        absent = [k for k in keys if k not in present]
        if absent:
            meta["_absent"] = absent
        item: dict[str, Any] = {"meta": json.dumps(meta, sort_keys=True)}
        for k in keys:
            if k in present:
                item[k] = reader.read(k)
            else:
                dtype, ndim = fills[k]
                item[k] = np.zeros((0,) * ndim, np.dtype(dtype))
        return item
    finally:
        reader.close()


def _meta_leaf(config: dict) -> int:
    from litdata.utilities._pytree import tree_unflatten, treespec_loads

    spec = treespec_loads(config["data_spec"])
    positions = tree_unflatten(list(range(len(config["data_format"]))), spec)
    return int(positions["meta"])


def _scan_shard_meta(output_dir: Path) -> list[dict]:
    """The `meta` of every item, in item order, reading only the meta bytes of each item.

    Parses LitData's chunk layout (uint32 count, uint32 offsets[N+1], items; an item is uint32
    sizes[leaves] then the leaves' bytes); compressed / encrypted shards fall back to reading
    every item through StreamingDataset.
    """
    index = json.loads((output_dir / "index.json").read_text())
    config = index["config"]
    try:
        leaf = _meta_leaf(config)
        plain = not config.get("compression") and not config.get("encryption")
        plain = plain and config["data_format"][leaf] == "str" and config.get("item_loader") == "PyTreeLoader"
    except Exception:  # noqa: BLE001 - unknown layout: use the slow path
        plain = False
    metas: list[dict] = []
    if not plain:
        dataset = open_shards(output_dir)
        return [json.loads(dataset[i]["meta"]) for i in range(len(dataset))]
    num_leaves = len(config["data_format"])
    for chunk in index["chunks"]:
        with open(output_dir / chunk["filename"], "rb") as fh:
            count = int(np.frombuffer(fh.read(4), np.uint32)[0])
            offsets = np.frombuffer(fh.read(4 * (count + 1)), np.uint32).astype(np.int64)
            if count != chunk["chunk_size"]:
                raise ValueError(f"{chunk['filename']}: {count} items, index says {chunk['chunk_size']}")
            for j in range(count):
                fh.seek(offsets[j])
                sizes = np.frombuffer(fh.read(4 * num_leaves), np.uint32).astype(np.int64)
                fh.seek(offsets[j] + 4 * num_leaves + int(sizes[:leaf].sum()))
                metas.append(json.loads(fh.read(int(sizes[leaf])).decode("utf-8")))
    return metas


def _offline_litdata() -> None:
    """Stop LitData from asking PyPI for a newer version (an HTTP request, up to 30 s when offline,
    made by every process that opens a StreamingDataset or runs optimize). Nothing in this project
    goes to the network at run time."""
    import litdata.helpers as helpers

    if not getattr(helpers._get_newer_version, "_talkinghead_offline", False):
        def no_check(curr_version: str) -> None:
            return None

        no_check._talkinghead_offline = True
        helpers._get_newer_version = no_check


def write_shards(
    store_root: str | Path,
    output_dir: str | Path,
    split: str | None = None,
    num_workers: int = 1,
    chunk_bytes: int | str = "64MB",
    start_method: str | None = None,
) -> list[dict]:
    """Convert a clip store (all clips, or one `split`) into LitData shards with `litdata.optimize`.

    One item per clip: every array of the clip plus `meta` (the clip's JSON metadata string).
    Clips lacking an optional array another clip has (e.g. `truth_*`) get an empty placeholder
    and list it in meta `_absent` (readers drop it), since LitData needs one item structure.
    Written to a temporary sibling folder and renamed onto `output_dir` when complete; also writes
    `output_dir/clips.json`, the index entries in item order (with `index` = item position).
    Returns those entries. `output_dir` must not hold shards already.
    """
    import litdata

    _offline_litdata()
    store = ClipStore(store_root)
    entries = store.clips(split)
    if not entries:
        raise ValueError(f"{store.root}: no clips" + (f" in split {split!r}" if split else ""))
    output = Path(output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} already exists and is not empty: remove it or choose another folder")

    key_sets = [set(store.keys(e)) for e in entries]
    keys = sorted(set().union(*key_sets))
    fills: dict[str, tuple[str, int]] = {}
    for k in keys:
        if all(k in s for s in key_sets):
            continue
        donor = next(e for e, s in zip(entries, key_sets) if k in s)
        arr = store.load(donor, [k])[k]
        fills[k] = (arr.dtype.str, arr.ndim)

    files = tuple(e["file"] for e in entries)
    fn = functools.partial(_shard_item, str(store.root), files, tuple(keys), fills)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        litdata.optimize(
            fn=fn,
            inputs=list(range(len(entries))),
            output_dir=str(tmp),
            chunk_bytes=chunk_bytes,
            num_workers=max(1, int(num_workers)),
            reorder_files=False,
            start_method=start_method,
        )
        metas = _scan_shard_meta(tmp)
        if len(metas) != len(entries):
            raise RuntimeError(f"shards hold {len(metas)} items, expected {len(entries)}")
        clips = [dict(_entry(m, ""), file=None, index=i) for i, m in enumerate(metas)]
        _atomic_json(tmp / SHARD_CLIPS_FILE, clips)
        if output.exists():
            output.rmdir()  # empty (checked above)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return clips


def open_shards(output_dir: str | Path, shuffle: bool = False, seed: int = 42, **kwargs) -> "Any":
    """A `litdata.StreamingDataset` over shards written by `write_shards` (one item per clip).

    Items are dicts of numpy arrays plus `meta` (JSON string). Random access (`dataset[i]`)
    works; item `i` is entry `i` of the folder's `clips.json`. Extra keyword arguments go to
    StreamingDataset (cache_dir, max_cache_size, ...).
    """
    import litdata

    _offline_litdata()
    output_dir = Path(output_dir)
    if not (output_dir / "index.json").is_file():
        raise FileNotFoundError(f"no LitData index.json in {output_dir}: run write_shards / "
                                "`talkinghead preprocess --shards` first")
    return litdata.StreamingDataset(str(output_dir), shuffle=shuffle, seed=seed, **kwargs)


def read_shard_clips(output_dir: str | Path) -> list[dict]:
    """Entries of a shard folder in item order (`clips.json`, else scanned from the items)."""
    output_dir = Path(output_dir)
    sidecar = output_dir / SHARD_CLIPS_FILE
    if sidecar.is_file():
        clips = json.loads(sidecar.read_text())
    else:
        if not (output_dir / "index.json").is_file():
            raise FileNotFoundError(f"no LitData index.json in {output_dir}: run write_shards first")
        clips = [dict(_entry(m, ""), file=None) for m in _scan_shard_meta(output_dir)]
    return [dict(e, index=i) for i, e in enumerate(clips)]


class ShardSource(_Catalog):
    """ClipStore's reading interface over LitData shards (random access through StreamingDataset).

    The StreamingDataset is opened lazily in each process; the last few items are kept
    (`cache_size`), since one training sample reads its clip several times (frames, mel, rows).
    """

    def __init__(self, output_dir: str | Path, cache_size: int = 4, **dataset_kwargs):
        self.root = Path(output_dir)
        self.entries = read_shard_clips(self.root)
        self._dataset_kwargs = dataset_kwargs
        self._dataset = None
        self._pid: int | None = None
        self._items = _LRU(cache_size)

    def __repr__(self) -> str:
        return f"ShardSource({str(self.root)!r}, {len(self)} clips)"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_dataset"] = None
        state["_pid"] = None
        return state

    def dataset(self):
        if self._dataset is None or self._pid != os.getpid():
            self._dataset = open_shards(self.root, **self._dataset_kwargs)
            self._pid = os.getpid()
        return self._dataset

    def item(self, entry: dict | int | str) -> dict[str, Any]:
        """The whole item of a clip: arrays plus `meta` (parsed dict); placeholders dropped."""
        pos = int(self.entry(entry)["index"])

        def fetch() -> dict:
            raw = self.dataset()[pos]
            meta = json.loads(raw["meta"])
            absent = set(meta.pop("_absent", []))
            out = {k: v for k, v in raw.items() if k != "meta" and k not in absent}
            out["meta"] = meta
            return out

        return self._items.get(pos, fetch)

    def keys(self, entry: dict | int | str) -> list[str]:
        return [k for k in self.item(entry) if k != "meta"]

    def meta(self, entry: dict | int | str) -> dict:
        return dict(self.item(entry)["meta"])

    def has(self, entry: dict | int | str, key: str) -> bool:
        return key != "meta" and key in self.item(entry)

    def load(self, entry: dict | int | str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        item = self.item(entry)
        keys = self.keys(entry) if keys is None else list(keys)
        missing = [k for k in keys if k not in item or k == "meta"]
        if missing:
            raise KeyError(f"{self.entry(entry)['clip_id']}: no array(s) {missing} in the shards")
        return {k: np.array(item[k]) for k in keys}

    def load_frames(self, entry: dict | int | str, indices: Iterable[int]) -> np.ndarray:
        item = self.item(entry)
        return decode_frames(item["frames"], item["frame_offsets"], indices)

    def take_rows(self, entry: dict | int | str, key: str, indices: Sequence[int]) -> np.ndarray:
        arr = self.item(entry)[key]
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(arr)):
            raise IndexError(f"rows {idx.min()}..{idx.max()} of {key!r} outside 0..{len(arr) - 1}")
        return np.array(arr[idx])
