"""Corpus readers on tiny fake layouts (empty files; LRW .txt with real content)."""
from __future__ import annotations

import zlib

import pytest

from talkinghead.data.corpora import READERS, Clip, read_corpus
from talkinghead.data.corpora.lrw import parse_duration, word_boundary
from talkinghead.data.corpora.mead import mead_split


def touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def lrw_txt(word: str, duration: float) -> str:
    return (f"Text:  {word}\nConf:  5\n\nWord:  {word}\n"
            f"Duration: {duration} seconds\n")


def test_registry_and_unknown_name(tmp_path):
    assert {"vox2", "lrw", "mead"} <= set(READERS)
    with pytest.raises(ValueError, match="lrw, mead, vox2"):
        read_corpus("nope", tmp_path)


@pytest.mark.parametrize("name", ["vox2", "lrw", "mead"])
def test_missing_folder_raises(tmp_path, name):
    with pytest.raises(FileNotFoundError):
        read_corpus(name, tmp_path / "missing")


# ----------------------------------------------------------------------------- vox2


def make_vox2(root):
    touch(root / "dev/mp4/id00012/abcdEFGH/00001.mp4")
    touch(root / "dev/mp4/id00012/abcdEFGH/00002.mp4")
    touch(root / "dev/mp4/id00012/abcdEFGH/00002.truth.npz")
    touch(root / "dev/mp4/id00012/abcdEFGH/notes.txt")  # stray
    touch(root / "dev/mp4/id00015/zzzzYYYY/00001.mp4")
    touch(root / "dev/mp4/README")  # stray
    touch(root / "dev/aac/id00012/abcdEFGH/00001.m4a")
    touch(root / "test/mp4/id00017/qqqqWWWW/00003.mp4")


def test_vox2(tmp_path):
    make_vox2(tmp_path)
    clips = read_corpus("vox2", tmp_path)
    assert all(isinstance(c, Clip) and c.dataset == "vox2" for c in clips)
    assert [c.clip_id for c in clips] == [
        "id00012/abcdEFGH/00001", "id00012/abcdEFGH/00002",
        "id00015/zzzzYYYY/00001", "id00017/qqqqWWWW/00003"]
    by = {c.clip_id: c for c in clips}
    c1 = by["id00012/abcdEFGH/00001"]
    assert c1.split == "train" and c1.speaker == "id00012" and c1.labels == {}
    assert c1.video == tmp_path / "dev/mp4/id00012/abcdEFGH/00001.mp4"
    assert c1.audio == tmp_path / "dev/aac/id00012/abcdEFGH/00001.m4a"
    assert c1.truth is None
    c2 = by["id00012/abcdEFGH/00002"]
    assert c2.audio is None
    assert c2.truth == tmp_path / "dev/mp4/id00012/abcdEFGH/00002.truth.npz"
    assert by["id00017/qqqqWWWW/00003"].split == "test"


def test_vox2_root_variants(tmp_path):
    make_vox2(tmp_path)
    dev = read_corpus("vox2", tmp_path / "dev")  # root is a split folder
    assert len(dev) == 3 and {c.split for c in dev} == {"train"}
    touch(tmp_path / "other/readme.txt")
    with pytest.raises(FileNotFoundError, match="dev/mp4"):
        read_corpus("vox2", tmp_path / "other")


# ----------------------------------------------------------------------------- lrw


def make_lrw(root):
    base = root / "lipread_mp4"
    for word, split, n, d in [("ABOUT", "train", 1, 0.53), ("ABOUT", "train", 2, 0.3),
                              ("ABOUT", "val", 1, 0.4), ("WORLD", "test", 7, 0.6)]:
        stem = f"{word}_{n:05d}"
        touch(base / word / split / f"{stem}.mp4")
        touch(base / word / split / f"{stem}.txt", lrw_txt(word, d))
    touch(base / "WORLD/test/WORLD_00008.mp4")  # no txt: kept, no boundary
    touch(base / "WORLD/test/WORLD_00009.mp4")
    touch(base / "WORLD/test/WORLD_00009.txt", "garbage\n")  # unparsable: same
    touch(base / "WORLD/test/README.md")  # stray
    touch(base / "WORLD/test/WORLD_00007.truth.npz")


def test_lrw(tmp_path):
    make_lrw(tmp_path)
    clips = read_corpus("lrw", tmp_path)
    assert [c.clip_id for c in clips] == [
        "ABOUT/train/ABOUT_00001", "ABOUT/train/ABOUT_00002", "ABOUT/val/ABOUT_00001",
        "WORLD/test/WORLD_00007", "WORLD/test/WORLD_00008", "WORLD/test/WORLD_00009"]
    by = {c.clip_id: c for c in clips}
    c = by["ABOUT/train/ABOUT_00001"]
    assert c.dataset == "lrw" and c.split == "train" and c.audio is None
    assert c.speaker == c.clip_id  # no speaker ids in LRW
    assert c.labels["word"] == "ABOUT"
    assert c.labels["duration"] == pytest.approx(0.53)
    assert c.labels["word_start"] == pytest.approx((1.16 - 0.53) / 2)
    assert c.labels["word_end"] == pytest.approx((1.16 - 0.53) / 2 + 0.53)
    assert by["ABOUT/val/ABOUT_00001"].split == "val"
    assert by["WORLD/test/WORLD_00007"].truth is not None
    assert by["WORLD/test/WORLD_00008"].labels == {"word": "WORLD"}
    assert by["WORLD/test/WORLD_00009"].labels == {"word": "WORLD"}
    # root may be lipread_mp4 itself
    assert [c.clip_id for c in read_corpus("lrw", tmp_path / "lipread_mp4")] == list(by)


def test_lrw_parsing():
    assert parse_duration(lrw_txt("ABOUT", 0.53)) == pytest.approx(0.53)
    assert parse_duration("Duration: 0.2 seconds") == pytest.approx(0.2)
    assert parse_duration("no such line") is None
    assert parse_duration("Duration: abc") is None
    s, e = word_boundary(0.16)
    assert (s, e) == pytest.approx((0.5, 0.66))
    assert word_boundary(2.0) == (0.0, 1.16)  # clamped to the clip


# ----------------------------------------------------------------------------- mead


def make_mead(root, actors=("M003", "W009")):
    for actor in actors:
        for view in ("front", "left_30"):
            touch(root / actor / "video" / view / "angry/level_2/001.mp4")
            touch(root / actor / "video" / view / "neutral/level_1/001.mp4")
            touch(root / actor / "video" / view / "neutral/level_1/002.mp4")
            touch(root / actor / "video" / view / "neutral/other/009.mp4")  # stray
        touch(root / actor / "audio/angry/level_2/001.m4a")
        touch(root / actor / "audio/neutral/level_1/001.m4a")
    touch(root / "README.txt")


def test_mead(tmp_path):
    make_mead(tmp_path)
    clips = read_corpus("mead", tmp_path)
    assert len(clips) == 2 * 2 * 3
    by = {c.clip_id: c for c in clips}
    c = by["M003/front/angry/level_2/001"]
    assert c.dataset == "mead" and c.speaker == "M003"
    assert c.labels == {"emotion": "angry", "level": 2, "view": "front"}
    assert c.audio == tmp_path / "M003/audio/angry/level_2/001.m4a"
    assert c.video == tmp_path / "M003/video/front/angry/level_2/001.mp4"
    assert by["M003/left_30/angry/level_2/001"].audio == c.audio  # audio shared by views
    assert by["W009/front/neutral/level_1/002"].audio is None
    for clip in clips:
        assert clip.split == mead_split(clip.speaker)
    # a single actor folder is accepted too
    single = read_corpus("mead", tmp_path / "W009")
    assert len(single) == 6 and {c.speaker for c in single} == {"W009"}
    assert {c.clip_id for c in single} == {i for i in by if i.startswith("W009/")}


def test_mead_split_rule():
    actors = [f"{s}{n:03d}" for s in "MW" for n in range(1, 60)]
    splits = [mead_split(a) for a in actors]
    assert splits == [mead_split(a) for a in actors]  # deterministic
    assert set(splits) == {"train", "val", "test"}
    for a, s in zip(actors, splits):
        b = zlib.crc32(a.encode()) % 10
        assert s == ("test" if b == 0 else "val" if b == 1 else "train")
