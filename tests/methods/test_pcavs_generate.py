"""PC-AVS generation: `generate` writes a playable mp4 of the audio's length for any input length and
pose mode; the benchmark hook builds a generator that answers harness requests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.methods.pcavs.generate import PCAVSGenerator, generate, load_model, num_frames_for
from talkinghead.methods.pcavs.module import PCAVSModule
from talkinghead.methods.pcavs.networks import PCAVSConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An (untrained) tiny PC-AVS saved as a Lightning checkpoint of the full stage."""
    from lightning.pytorch import Trainer

    torch.manual_seed(0)
    module = PCAVSModule(stage="full", model=PCAVSConfig.tiny(image_size=32, num_identities=3).to_dict())
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, max_steps=0)
    trainer.strategy.connect(module)
    path = tmp_path_factory.mktemp("pcavs-ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_load_model_from_lightning_checkpoint(checkpoint):
    model, info = load_model(checkpoint)
    assert info["kind"] == "lightning" and info["stage"] == "full"
    assert model.config.image_size == 32 and not model.training


@pytest.mark.parametrize("mode", ["fixed", "pose", "frontal"])
def test_generate_writes_mp4_of_the_audio_length(checkpoint, raw_clips, tmp_path, mode, audio_of):
    from talkinghead.data.audio import load_audio, probe_audio
    from talkinghead.data.video import probe_video, read_video, write_audio

    reference = raw_clips[0]
    audio = load_audio(audio_of(raw_clips[1]))
    # an odd length: 1.3 s of audio (longer than nothing, shorter than the clips)
    wav = tmp_path / "speech.wav"
    write_audio(wav, audio[: int(1.3 * 16000)])
    # the reference as an image file, read and aligned like training data
    import cv2

    frames, _ = read_video(reference)
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), cv2.cvtColor(frames[3], cv2.COLOR_RGB2BGR))
    out = tmp_path / f"out-{mode}.mp4"
    kwargs = {"fixed": {"fixed_pose": True}, "pose": {"pose_source": raw_clips[2]}, "frontal": {"frontal": True}}[mode]
    path = generate(checkpoint, image, wav, out, batch_size=8, **kwargs)
    assert path == out and out.is_file()
    info = probe_video(out)
    expected = num_frames_for(int(1.3 * 16000))
    assert expected == 32
    decoded, fps = read_video(out)
    assert len(decoded) == expected and fps == pytest.approx(25)
    assert decoded.shape[1:] == (224, 224, 3)
    assert info.has_audio
    assert probe_audio(out)["duration"] == pytest.approx(1.3, abs=0.1)


def test_any_input_length(checkpoint, raw_clips, audio_of):
    from talkinghead.data.audio import load_audio

    from talkinghead.generation import frames_tensor
    from talkinghead.data.video import read_video

    generator = PCAVSGenerator.from_checkpoint(checkpoint, batch_size=4)
    frames, _ = read_video(raw_clips[0])
    pose_source = frames_tensor(frames[:5])  # shorter than the audio: its last frame is held
    reference = pose_source[0]
    audio = torch.from_numpy(load_audio(audio_of(raw_clips[0])))
    for samples in (100, 640, 11 * 640 + 13):
        out = torch.cat(list(generator.synthesize(reference, audio[:samples], pose_source=pose_source)))
        assert out.shape == (num_frames_for(samples), 3, 224, 224)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError):
        list(generator.synthesize(reference, audio[:0]))


def test_bench_hook_answers_requests(checkpoint, raw_clips, audio_of):
    from talkinghead.bench.methods import build_method
    from talkinghead.generation import GenerationRequest, frames_tensor
    from talkinghead.data.audio import load_audio
    from talkinghead.data.video import read_video

    method = build_method("pcavs", checkpoint)
    assert method.name == "pcavs" and Path(method.checkpoint) == checkpoint
    frames, _ = read_video(raw_clips[1])
    frames = frames_tensor(frames[:9])
    audio = torch.from_numpy(load_audio(audio_of(raw_clips[1]))[: 9 * 640])
    request = GenerationRequest(clip_id="c", reference=frames[0], audio=audio, num_frames=9, pose_source=frames)
    out = method.generate(request)
    assert out.shape == (9, 3, 224, 224) and out.dtype == torch.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    # the fixed-pose variant ignores the pose source
    fixed = PCAVSGenerator.from_checkpoint(checkpoint, pose_mode="fixed").generate(request)
    again = PCAVSGenerator.from_checkpoint(checkpoint, pose_mode="fixed").generate(
        GenerationRequest(clip_id="c", reference=frames[0], audio=audio, num_frames=9, pose_source=frames.flip(0)))
    assert torch.allclose(fixed, again)
    assert np.isfinite(out.numpy()).all()


def test_cli_generate_with_a_pose_source(checkpoint, raw_clips, tmp_path, capsys, audio_of):
    """The user's path: `talkinghead generate --method pcavs ... --pose-source video.mp4`."""
    from talkinghead.cli import main
    from talkinghead.data.video import read_video

    out = tmp_path / "cli.mp4"
    code = main(["generate", "--method", "pcavs", "--checkpoint", str(checkpoint), "--reference", str(raw_clips[0]),
                 "--audio", str(audio_of(raw_clips[1])), "--pose-source", str(raw_clips[2]), "--out", str(out)])
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    from talkinghead.data.audio import load_audio

    decoded, _ = read_video(out)
    assert len(decoded) == num_frames_for(len(load_audio(audio_of(raw_clips[1])))) > 10
    assert decoded.shape[1:] == (224, 224, 3)


def test_cli_generate_names_a_missing_file_and_an_unknown_method(checkpoint, tmp_path, capsys):
    from talkinghead.cli import main

    missing = tmp_path / "nobody.jpg"
    code = main(["generate", "--method", "pcavs", "--checkpoint", str(checkpoint), "--reference", str(missing),
                 "--audio", str(missing), "--out", str(tmp_path / "x.mp4")])
    assert code == 1 and f"{missing}: no such file" in capsys.readouterr().err
    assert main(["generate", "--method", "nomethod", "--reference", "a"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nomethod'" in err and "pcavs" in err  # the registered methods are listed
