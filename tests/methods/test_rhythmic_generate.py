"""Rhythmic Head generation (`talkinghead.methods.rhythmic.generate`): a reference video (or image) and
audio give an mp4 of the audio's length with the audio; a pose source drives the poses Theta gets; K
references are picked as documented; fine-tuning changes only the official parameters; the bench rows
answer harness requests with a reference video."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.generation import GenerationRequest, ReferenceVideo, frames_tensor, num_frames_for
from talkinghead.methods.rhythmic import generate as gen
from talkinghead.methods.rhythmic.composer import ComposerConfig
from talkinghead.methods.rhythmic.generate import (RhythmicGenerator, finetune_composer, finetune_parameter_names,
                                                   generate, load_model, pick_references)
from talkinghead.methods.rhythmic.networks import RhythmicConfig


def tiny_config() -> RhythmicConfig:
    composer = ComposerConfig.tiny(image_size=32, n_shot=2, n_downsample_G=2, n_adaptive_layers=1)
    return RhythmicConfig.tiny(image_size=32, tau=16, num_references=2, composer=composer)


@pytest.fixture(scope="module")
def checkpoint(synth_vox2_store, tmp_path_factory) -> Path:
    """An untrained tiny Rhythmic Head with its PCA and motion normaliser fitted on the test store,
    saved as a Lightning checkpoint of the joint stage (netD included)."""
    from lightning.pytorch import Trainer

    from talkinghead.methods.rhythmic.module import RhythmicModule

    torch.manual_seed(0)
    module = RhythmicModule(stage="joint", model=tiny_config().to_dict(), store=str(synth_vox2_store))
    assert module.fit_statistics() == ["pca", "normaliser"]
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, max_steps=0)
    trainer.strategy.connect(module)
    path = tmp_path_factory.mktemp("rhythmic-ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def generator(checkpoint) -> RhythmicGenerator:
    return RhythmicGenerator.from_checkpoint(checkpoint, batch_size=8)


@pytest.fixture(scope="module")
def clip_video(raw_clips) -> ReferenceVideo:
    from talkinghead.generation import read_reference_video

    return read_reference_video(raw_clips[0], 16)


def test_load_model(checkpoint):
    model, info = load_model(checkpoint)
    assert info["kind"] == "lightning" and info["stage"] == "joint" and info["discriminator"]
    assert model.config.image_size == 32 and model.config.tau == 16 and not model.training
    assert bool(model.pca.fitted)


def test_reference_video_reader(clip_video, raw_clips, audio_of):
    from talkinghead.data.audio import load_audio

    assert len(clip_video) == 16 and clip_video.frames.shape == (16, 3, 224, 224)
    assert clip_video.landmarks.shape == (16, 68, 2) and torch.isfinite(clip_video.landmarks).all()
    assert clip_video.poses.shape == (16, 6) and clip_video.audio.shape == (16 * 640,)
    wav = load_audio(raw_clips[0])
    assert torch.allclose(clip_video.audio, torch.from_numpy(wav[: 16 * 640]))
    # the landmarks belong to the aligned frames: the mouth anchor sits at (112, 120) as in the store
    mouth = clip_video.landmarks[:, 60:68].mean(1)
    assert (mouth - torch.tensor([112.0, 120.0])).abs().max() < 3.0


def test_generate_writes_mp4_of_the_audio_length(checkpoint, raw_clips, tmp_path, audio_of):
    from talkinghead.data.audio import load_audio, probe_audio
    from talkinghead.data.video import read_video, write_audio

    wav = tmp_path / "speech.wav"
    write_audio(wav, load_audio(audio_of(raw_clips[1]))[: int(1.3 * 16000)])
    out = generate(checkpoint, raw_clips[0], wav, tmp_path / "out.mp4")
    frames, fps = read_video(out)
    assert len(frames) == num_frames_for(int(1.3 * 16000)) == 32 and fps == pytest.approx(25)
    assert frames.shape[1:] == (224, 224, 3)
    assert probe_audio(out)["duration"] == pytest.approx(1.3, abs=0.1)


def test_an_image_reference_is_a_one_frame_reference_video(checkpoint, raw_clips, tmp_path, audio_of):
    import cv2

    from talkinghead.data.video import read_video

    frames, _ = read_video(raw_clips[0])
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), cv2.cvtColor(frames[3], cv2.COLOR_RGB2BGR))
    out = generate(checkpoint, image, audio_of(raw_clips[1]), tmp_path / "from-image.mp4")
    decoded, _ = read_video(out)
    assert len(decoded) > 1 and decoded.shape[1:] == (224, 224, 3)
    with pytest.raises(ValueError, match="has 1 frame"):
        generate(checkpoint, image, audio_of(raw_clips[1]), tmp_path / "x.mp4", references=2)
    assert not (tmp_path / "x.mp4").exists()


def test_pose_source_drives_the_poses_theta_gets(generator, clip_video, raw_clips, monkeypatch, audio_of):
    from talkinghead.data.audio import load_audio
    from talkinghead.generation import read_driving_video

    audio = torch.from_numpy(load_audio(audio_of(raw_clips[1])))[: 20 * 640]
    seen: list[torch.Tensor] = []
    real_inputs = gen.composer_inputs

    def spy(target_landmarks, target_poses, *args, **kwargs):
        seen.append(torch.as_tensor(target_poses).float().clone())
        return real_inputs(target_landmarks, target_poses, *args, **kwargs)

    monkeypatch.setattr(gen, "composer_inputs", spy)
    reference = clip_video.frames[0]
    from_audio = torch.cat(list(generator.synthesize(reference, audio, 20, reference_video=clip_video)))
    poses_audio = torch.cat(seen)
    seen.clear()
    source = read_driving_video(raw_clips[2], 20)
    driven = torch.cat(list(generator.synthesize(reference, audio, 20, source, reference_video=clip_video)))
    poses_source = torch.cat(seen)
    expected = gen.source_poses(source, 20, generator.model.config.head_motion.pose_smoothing)
    assert from_audio.shape == driven.shape == (20, 3, 224, 224)
    assert torch.allclose(poses_source, expected, atol=1e-5)
    assert not torch.allclose(poses_source, poses_audio, atol=1e-3)
    assert not torch.equal(from_audio, driven)  # untrained: outputs near 0.5, yet not the same


def test_pick_references():
    poses = torch.zeros(16, 6)
    poses[:, 1] = torch.linspace(0.5, 0.1, 16)  # turning towards the camera: frame 15 is the most frontal
    assert pick_references(poses, 1) == [15]
    assert pick_references(poses, 2) == [0, 15]  # evenly spaced 0, 8; 8 is nearest to 15 -> 15
    assert pick_references(poses, 4) == [0, 4, 8, 15]
    poses[:, 1] = (torch.arange(16) - 4.0).abs()  # frame 4 most frontal, already a pick
    assert pick_references(poses, 4) == [0, 4, 8, 12]
    with pytest.raises(ValueError):
        pick_references(poses, 17)


def test_references_option(generator, clip_video, raw_clips, audio_of):
    from talkinghead.data.audio import load_audio

    audio = torch.from_numpy(load_audio(audio_of(raw_clips[1])))[: 6 * 640]
    reference = clip_video.frames[0]
    two = torch.cat(list(generator.synthesize(reference, audio, 6, reference_video=clip_video)))
    one = torch.cat(list(generator.synthesize(reference, audio, 6, references=1, reference_video=clip_video)))
    assert one.shape == two.shape == (6, 3, 224, 224) and not torch.equal(one, two)
    with pytest.raises(ValueError, match="references must be 1 or the model's K = 2"):
        list(generator.synthesize(reference, audio, 6, references=3, reference_video=clip_video))


def test_finetuning_changes_only_the_official_parameters(generator, clip_video, raw_clips, audio_of):
    from talkinghead.data.audio import load_audio

    model = generator.model
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    picks = pick_references(clip_video.poses, 2)
    images = generator._frames(clip_video.frames[picks])
    landmarks = generator._points(clip_video.landmarks[picks], 224)
    tuned = finetune_composer(model, images, landmarks, clip_video.poses[picks], 3, generator.discriminator)
    names = set(finetune_parameter_names(model.generator))
    assert names and all(any(s in n for s in ("fc", "conv_img", "up")) for n in names)
    after = tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= names, sorted(changed - names)[:5]
    assert {"netG.conv_img.weight"} <= changed
    # the generator's own model is untouched; fine-tuning through synthesize changes the output
    assert all(torch.equal(before[k], v) for k, v in model.generator.state_dict().items())
    audio = torch.from_numpy(load_audio(audio_of(raw_clips[1])))[: 4 * 640]
    plain = torch.cat(list(generator.synthesize(clip_video.frames[0], audio, 4, reference_video=clip_video)))
    tuned_out = torch.cat(list(generator.synthesize(clip_video.frames[0], audio, 4, finetune_steps=2,
                                                    reference_video=clip_video)))
    assert not torch.equal(plain, tuned_out)


def test_bench_rows_answer_requests_with_a_reference_video(checkpoint, clip_video, raw_clips, audio_of):
    from talkinghead.data.audio import load_audio
    from talkinghead.methods.rhythmic import bench

    audio = torch.from_numpy(load_audio(audio_of(raw_clips[0])))
    frames = clip_video.frames
    request = GenerationRequest("c", frames[0], audio[16 * 640: 26 * 640], 10,
                                pose_source=frames[:10].flip(0), reference_video=clip_video)
    for build in (bench.build, bench.build_gt_pose):
        row = build(checkpoint, "cpu")
        out = row.generate(request)
        assert out.shape == (10, 3, 224, 224) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert bench.build_gt_pose(checkpoint, "cpu").name == "rhythmic_gt_pose"
    # without a reference video the reference image is one (K = 1)
    plain = GenerationRequest("c", frames[0], audio[: 5 * 640], 5)
    assert bench.build(checkpoint, "cpu").generate(plain).shape == (5, 3, 224, 224)
    with pytest.raises(FileNotFoundError, match="make train METHOD=rhythmic"):
        bench.build(None, "cpu")


def test_official_generator_needs_trained_psi_phi(checkpoint, tmp_path, monkeypatch):
    """latest_net_G.pth beside a trained .ckpt: Theta from the official file (its size and K), Psi and
    Phi from the .ckpt; alone (and no trained run): a clear error."""
    import shutil

    from talkinghead.methods.rhythmic.composer import Composer
    from talkinghead.methods.rhythmic.official import FILE

    monkeypatch.setenv("TALKINGHEAD_RUNS", str(tmp_path / "no-runs"))
    alone = tmp_path / "alone"
    alone.mkdir()
    torch.manual_seed(1)
    official = Composer(ComposerConfig.tiny(image_size=64, n_shot=2))
    torch.save(official.state_dict(), alone / FILE)
    with pytest.raises(FileNotFoundError, match="Psi and Phi come from a checkpoint trained here"):
        load_model(alone)
    both = tmp_path / "both"
    both.mkdir()
    shutil.copy(alone / FILE, both / FILE)
    shutil.copy(checkpoint, both / "psi_phi.ckpt")
    model, info = load_model(both / FILE)
    ours, _ = load_model(checkpoint)
    assert info["kind"] == "official" and model.config.num_references == 2 and model.config.composer.ngf == 8
    assert model.config.image_size == 256 and model.config.edge_thickness == 2.0  # the official size: the file has none
    assert all(torch.equal(v, official.state_dict()[k]) for k, v in model.generator.state_dict().items())
    assert all(torch.equal(v, ours.head_motion.state_dict()[k]) for k, v in model.head_motion.state_dict().items())
    assert all(torch.equal(v, ours.expression.state_dict()[k]) for k, v in model.expression.state_dict().items())
