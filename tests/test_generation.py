"""The generation base: readers (aligned like the clip store), the mp4 writer (atomic, audio fitted
to the frames), default checkpoints, and a toy `Generator` through every entry point."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead import generation
from talkinghead.generation import (
    Control,
    GenerationRequest,
    Generator,
    TalkingHeadGenerator,
    default_checkpoint,
    frames_tensor,
    num_frames_for,
    read_audio,
    read_driving_video,
    read_reference,
    write_talking_head,
)


# ---------------------------------------------------------------------------------------------
# a toy generator: no trained model
# ---------------------------------------------------------------------------------------------
class Pulse(Generator):
    """Toy: the reference, its brightness following the audio envelope (plus a pose source's mean)."""

    name = "pulse"
    controls = (
        Control("pose_source", "video", "video whose mean brightness is added"),
        Control("gain", "float", "envelope gain", default=1.0),
        Control("still", "flag", "ignore the audio", default=False, group="motion"),
        Control("wobble", "flag", "not a real option: only here to be exclusive with --still", default=False,
                group="motion"),
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls: list[dict] = []

    @classmethod
    def from_checkpoint(cls, checkpoint, device="cpu"):
        return cls(device=device, checkpoint=checkpoint, description="toy")

    def synthesize(self, reference, audio, num_frames, pose_source=None, gain=1.0, still=False, wobble=False):
        self.calls.append({"reference": tuple(reference.shape), "num_frames": num_frames, "gain": gain,
                           "pose_source": None if pose_source is None else tuple(pose_source.shape)})
        padded = torch.zeros(num_frames * 640)
        padded[: min(len(audio), len(padded))] = audio[: len(padded)]
        envelope = padded.view(num_frames, 640).abs().mean(1)
        envelope = envelope / envelope.max().clamp_min(1e-6)
        for start in range(0, num_frames, 4):
            stop = min(num_frames, start + 4)
            scale = torch.ones(stop - start) if still else 0.5 + 0.5 * gain * envelope[start:stop]
            frames = reference[None] * scale[:, None, None, None]
            if pose_source is not None:
                frames = frames + 0.1 * pose_source[start:stop].mean(dim=(1, 2, 3))[:, None, None, None]
            yield frames.clamp(0, 1).cpu()


def _png_of_frame(video: Path, index: int, path: Path) -> Path:
    import cv2

    from talkinghead.data.video import read_video

    frames, _ = read_video(video)
    cv2.imwrite(str(path), cv2.cvtColor(frames[index], cv2.COLOR_RGB2BGR))
    return path


# ---------------------------------------------------------------------------------------------
# moved types and small pieces
# ---------------------------------------------------------------------------------------------
def test_bench_reexports_the_generation_types():
    from talkinghead.bench import methods, protocol

    assert methods.GenerationRequest is GenerationRequest
    assert methods.TalkingHeadGenerator is TalkingHeadGenerator
    assert methods.runs_root is generation.runs_root
    assert protocol.frames_tensor is frames_tensor


def test_num_frames_for_and_frames_tensor():
    assert [num_frames_for(n) for n in (0, 100, 640, 959, 961, 11 * 640 + 13, int(1.3 * 16000))] == [1, 1, 1, 1, 2,
                                                                                                      11, 32]
    frames = np.full((2, 4, 6, 3), 255, np.uint8)
    out = frames_tensor(frames)
    assert out.shape == (2, 3, 4, 6) and out.dtype == torch.float32 and float(out.max()) == 1.0


def test_default_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKINGHEAD_RUNS", str(tmp_path))
    assert default_checkpoint("toy", "full") is None
    folder = tmp_path / "toy" / "full" / "checkpoints"
    folder.mkdir(parents=True)
    old, new = folder / "epoch=0.ckpt", folder / "epoch=1.ckpt"
    old.write_bytes(b"0")
    new.write_bytes(b"1")
    os.utime(old, (1_000, 1_000))
    os.utime(new, (2_000, 2_000))
    assert default_checkpoint("toy", "full") == new
    assert default_checkpoint("toy", "other") is None
    (folder / "last.ckpt").write_bytes(b"2")
    os.utime(folder / "last.ckpt", (500, 500))
    assert default_checkpoint("toy", "full") == folder / "last.ckpt"


# ---------------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("audio_seconds", [0.3, 2.0])  # shorter than the frames (padded) / longer (cut)
def test_writer_fits_audio_to_the_frames(tmp_path, audio_seconds):
    import av

    from talkinghead.data.audio import load_audio
    from talkinghead.data.video import read_video

    num_frames = 23
    levels = torch.linspace(0.1, 0.9, num_frames)  # one grey level per frame: order and values checkable
    chunks = list(levels[:, None, None, None].expand(-1, 3, 64, 48).split([8, 8, 7]))
    audio = np.sin(np.arange(int(audio_seconds * 16000)) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.5
    out = tmp_path / "sub" / "talk.mp4"
    assert write_talking_head(out, iter(chunks), audio, num_frames) == out
    frames, fps = read_video(out)
    assert len(frames) == num_frames and frames.shape[1:] == (64, 48, 3) and fps == pytest.approx(25)
    # the frames, in order, survive the encoder (H.264 at crf 18)
    assert np.abs(frames.reshape(num_frames, -1).mean(1) / 255 - levels.numpy()).max() < 0.02
    with av.open(str(out)) as container:  # the audio stream's length: num_frames * 640 samples
        stream = container.streams.audio[0]
        assert stream.sample_rate == 16000
        samples = float(stream.duration * stream.time_base) * 16000
    assert abs(samples - num_frames * 640) <= 640
    # decoding yields whole AAC frames (1024 samples): at most one frame more
    decoded = load_audio(out)
    assert 0 <= len(decoded) - num_frames * 640 < 1024
    # the driving audio, then silence (0.3 s) / cut (2 s)
    kept = min(len(audio), num_frames * 640)
    assert np.abs(decoded[2000:kept - 2000]).mean() > 0.2 and np.abs(decoded[kept + 2000:num_frames * 640]).max(
        initial=0) < 0.05
    assert [p.name for p in out.parent.iterdir()] == ["talk.mp4"]  # no temporary left over


def test_writer_accepts_a_tensor_audio_and_device_chunks(tmp_path):
    from talkinghead.data.video import read_video

    out = write_talking_head(tmp_path / "t.mp4", [torch.zeros(3, 3, 32, 32)], torch.zeros(100), 3)
    assert len(read_video(out)[0]) == 3


def test_a_failing_chunk_iterator_leaves_no_file(tmp_path):
    out = tmp_path / "broken.mp4"

    def chunks():
        yield torch.rand(4, 3, 32, 32)
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        write_talking_head(out, chunks(), np.zeros(16000, np.float32), 10)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # too few / too many frames for num_frames: an error, and nothing written either
    with pytest.raises(ValueError, match="got 4 frames, expected 10"):
        write_talking_head(out, [torch.rand(4, 3, 32, 32)], np.zeros(100, np.float32), 10)
    with pytest.raises(ValueError, match="more than the 2 frames"):
        write_talking_head(out, [torch.rand(4, 3, 32, 32)], np.zeros(100, np.float32), 2)
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        write_talking_head(out, [torch.rand(3, 32, 32)], np.zeros(100, np.float32), 2)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# the readers
# ---------------------------------------------------------------------------------------------
def test_read_reference_errors_name_the_file(tmp_path):
    import cv2

    missing = tmp_path / "nobody.jpg"
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such file"):
        read_reference(missing)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=f"{text}: not a readable image or video"):
        read_reference(text)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 127, np.uint8))
    with pytest.raises(ValueError, match=f"{blank}: no face found"):
        read_reference(blank)
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=str(broken_video)):
        read_reference(broken_video)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none.wav")):
        read_audio(tmp_path / "none.wav")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none.mp4")):
        read_driving_video(tmp_path / "none.mp4", 5)


def test_readers_align_like_the_clip_store(raw_clips, synth_vox2_store, tmp_path, audio_of):
    from talkinghead.data.store import ClipStore

    store = ClipStore(synth_vox2_store)
    entry = store.clips()[0]
    video = Path(store.meta(entry)["source_video"])
    count = int(entry["num_frames"])
    stored = frames_tensor(store.load_frames(entry, range(count)))
    driving = read_driving_video(video, count)
    assert driving.shape == (count, 3, 224, 224) and driving.dtype == torch.float32
    assert 0 <= float(driving.min()) and float(driving.max()) <= 1
    # the same alignment as the store (which keeps its frames as JPEG)
    assert float((driving - stored).abs().mean()) < 0.02
    # shorter than asked: the last frame is held; longer: cut
    held = read_driving_video(video, count + 7)
    assert torch.equal(held[:count], driving) and torch.equal(held[count:], driving[-1:].expand(7, -1, -1, -1))
    assert torch.equal(read_driving_video(video, 5), driving[:5])
    # looped (PD-FGC's convention): frame t % len
    looped = read_driving_video(video, count + 7, loop=True)
    assert torch.equal(looped[:count], driving) and torch.equal(looped[count:], driving[:7])
    # a folder of frames (sorted by name, 25 fps) reads like the video it came from
    import cv2

    from talkinghead.data.video import read_video

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(read_video(video)[0]):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    from_folder = read_driving_video(folder, count + 2, loop=True)
    assert torch.equal(from_folder[:count], driving) and torch.equal(from_folder[count:], driving[:2])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        read_driving_video(tmp_path / "empty", 3)
    # a reference: an image, or a video's first frame; both aligned to (3, 224, 224)
    from_video = read_reference(video)
    from_image = read_reference(_png_of_frame(video, 0, tmp_path / "face.png"))
    assert from_video.shape == from_image.shape == (3, 224, 224)
    assert torch.allclose(from_video, from_image)
    wav = read_audio(audio_of(video))
    assert wav.dtype == np.float32 and wav.ndim == 1 and abs(len(wav) - count * 640) <= 640


# ---------------------------------------------------------------------------------------------
# a Generator through the base
# ---------------------------------------------------------------------------------------------
def test_controls_are_checked():
    with pytest.raises(ValueError, match="kind must be one of"):
        Control("x", "movie")
    assert Pulse.control("pose_source").option == "--pose-source"
    values = Pulse.check_controls(gain=2.0)
    assert values == {"pose_source": None, "gain": 2.0, "still": False, "wobble": False}
    with pytest.raises(ValueError, match="unknown control.*eye_source"):
        Pulse.check_controls(eye_source="x.mp4")
    with pytest.raises(ValueError, match="at most one of still, wobble"):
        Pulse.check_controls(still=True, wobble=True)


def test_toy_generator_answers_requests():
    generator = Pulse()
    assert isinstance(generator, TalkingHeadGenerator) and generator.device == torch.device("cpu")
    reference = torch.full((3, 32, 32), 0.8)
    audio = torch.linspace(0, 1, 10 * 640)
    pose = torch.rand(10, 3, 32, 32)
    frames = generator.generate(GenerationRequest("c", reference, audio, 10, pose_source=pose, eye_source=pose))
    assert frames.shape == (10, 3, 32, 32) and 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert generator.calls[-1] == {"reference": (3, 32, 32), "num_frames": 10, "gain": 1.0,
                                   "pose_source": (10, 3, 32, 32)}
    assert float(frames[-1].mean()) > float(frames[0].mean())  # louder -> brighter
    generator.generate(GenerationRequest("c", reference, audio, 10))
    assert generator.calls[-1]["pose_source"] is None


def test_toy_generator_files_in_mp4_out(raw_clips, tmp_path, audio_of):
    from talkinghead.data.audio import load_audio
    from talkinghead.data.video import read_video, write_audio

    wav = tmp_path / "speech.wav"
    write_audio(wav, load_audio(audio_of(raw_clips[1]))[: int(0.9 * 16000)])
    image = _png_of_frame(raw_clips[0], 2, tmp_path / "face.png")
    generator = Pulse()
    out = generator.generate_file(image, wav, tmp_path / "out" / "toy.mp4", pose_source=raw_clips[2], gain=0.5)
    assert out == tmp_path / "out" / "toy.mp4"
    frames, fps = read_video(out)
    assert len(frames) == num_frames_for(int(0.9 * 16000)) == 22 and frames.shape[1:] == (224, 224, 3)
    # the pose source reached the method aligned and fitted to the frames
    assert generator.calls[-1] == {"reference": (3, 224, 224), "num_frames": 22, "gain": 0.5,
                                   "pose_source": (22, 3, 224, 224)}
    with pytest.raises(FileNotFoundError, match="nothing.mp4: no such file"):
        generator.generate_file(image, wav, tmp_path / "x.mp4", pose_source=tmp_path / "nothing.mp4")
    with pytest.raises(ValueError, match="at most one"):
        generator.generate_file(image, wav, tmp_path / "x.mp4", still=True, wobble=True)
    assert not (tmp_path / "x.mp4").exists()


def test_toy_generator_command_line(raw_clips, tmp_path, capsys, audio_of):
    with pytest.raises(SystemExit) as exit_info:
        generation.main(Pulse, ["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "talkinghead generate --method pulse" in usage
    for option in ("--checkpoint", "--reference", "--audio", "--out", "--device", "--pose-source", "--gain"):
        assert option in usage
    assert "[--still | --wobble]" in usage
    # exclusive flags: a usage error
    with pytest.raises(SystemExit) as exit_info:
        generation.main(Pulse, ["--reference", "a", "--audio", "b", "--out", "c", "--still", "--wobble"])
    assert exit_info.value.code == 2
    capsys.readouterr()
    # a missing file: exit 1 and one line naming it
    missing = tmp_path / "nobody.jpg"
    assert generation.main(Pulse, ["--reference", str(missing), "--audio", str(missing), "--out",
                                   str(tmp_path / "x.mp4")]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: no such file" in err and "Traceback" not in err
    # the real thing (no checkpoint needed: no default_checkpoint, load gets None)
    out = tmp_path / "cli.mp4"
    seen = {}

    def load(checkpoint, device):
        seen.update(checkpoint=checkpoint, device=device)
        return Pulse.from_checkpoint(checkpoint, device)

    assert generation.main(Pulse, ["--reference", str(raw_clips[0]), "--audio", str(audio_of(raw_clips[1])),
                                   "--out", str(out), "--still"], load=load) == 0
    assert f"wrote {out}" in capsys.readouterr().out and out.is_file()
    assert seen == {"checkpoint": None, "device": "cpu"}
    # a method that needs a checkpoint and finds none: a usage error naming where it looked
    with pytest.raises(SystemExit) as exit_info:
        generation.main(Pulse, ["--reference", "a", "--audio", "b", "--out", "c"], default_checkpoint=lambda: None,
                        train_hint="make train METHOD=pulse",
                        default_checkpoint_hint="runs/pulse/full/checkpoints/last.ckpt")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "runs/pulse/full/checkpoints/last.ckpt" in err and "make train METHOD=pulse" in err
