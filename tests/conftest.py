"""Shared fixtures: tiny SynthTalk corpora, generated once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from talkinghead.data.synthtalk.generate import SynthConfig, generate

@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests run two pytest workers on two cores: one intra-op thread each avoids oversubscription
    (OpenMP spinning made small forwards 10-60x slower on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def benchmark_script():
    """Load a script of benchmarks/ as a module: benchmark_script("pdfgc_probes")."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


TINY_VOX2 = SynthConfig(layout="vox2", train_identities=3, test_identities=1, clips_per_video=1, duration=1.6,
                        identity_candidates=1)  # the first usable draw: no identity choice (1 min) in tests


@pytest.fixture(scope="session")
def synth_vox2_config() -> SynthConfig:
    """The config the `synth_vox2` corpus was written with."""
    return TINY_VOX2


@pytest.fixture(scope="session")
def synth_vox2(tmp_path_factory):
    """A SynthTalk corpus in the VoxCeleb2 layout: 3 train + 1 test identity, one 40-frame clip each."""
    root = tmp_path_factory.mktemp("synth") / "vox2"
    result = generate(root, TINY_VOX2, workers=1, progress=False)
    assert not result["failed"], result["failed"]
    return root


@pytest.fixture(scope="session")
def synth_vox2_store(synth_vox2, tmp_path_factory):
    """`synth_vox2` preprocessed into a clip store (dlib landmarks, aligned 224 frames, mel).

    Shared read-only by the metric, SyncNet and harness tests; a test that writes must copy it.
    """
    from talkinghead.data.preprocess import preprocess_corpus

    root = tmp_path_factory.mktemp("store") / "vox2"
    report = preprocess_corpus("vox2", synth_vox2, root, workers=1, progress=False)
    assert not report["failed"], report["failed"]
    return root


@pytest.fixture(scope="session")
def raw_clips(synth_vox2) -> list[Path]:
    """The raw mp4 files of `synth_vox2`, sorted."""
    return sorted(Path(synth_vox2).rglob("*.mp4"))


@pytest.fixture(scope="session")
def audio_of():
    """``audio_of(video)``: the audio file of a raw clip (SynthTalk's .m4a twin, else the mp4 itself)."""
    def audio_of(video: Path) -> Path:
        twin = video.with_suffix(".m4a")
        return twin if twin.exists() else video

    return audio_of


@pytest.fixture(scope="session")
def wandb_offline():
    """``wandb_offline(mp)``: W&B offline through `mp` (a ``pytest.MonkeyPatch``): WANDB_MODE=offline,
    no API key and no project override from the environment, so runs land in local folders."""
    def apply(mp: pytest.MonkeyPatch) -> None:
        for name in ("WANDB_API_KEY", "WANDB_PROJECT"):
            mp.delenv(name, raising=False)
        mp.setenv("WANDB_MODE", "offline")

    return apply


@pytest.fixture(scope="session")
def check_augment():
    """``check_augment(augment, frames)``: the contract of a frame augmentation
    (`talkinghead.data.datamodule.Augment`): same shape, dtype and device, finite, in [0, 1], the
    input left untouched. Returns the output."""
    def check(augment, frames: torch.Tensor) -> torch.Tensor:
        before = frames.clone()
        out = augment(frames)
        assert out.shape == frames.shape and out.dtype == frames.dtype and out.device == frames.device
        assert torch.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert torch.equal(frames, before), "input modified in place"
        return out

    return check


@pytest.fixture(scope="session")
def check_seeded():
    """``check_seeded(augment, frames)``: an augmentation draws from torch's global RNG only: the
    same seed gives the same output (whatever numpy's state, and inside ``fork_rng``), another seed
    another output."""
    import numpy as np

    def check(augment, frames: torch.Tensor) -> None:
        torch.manual_seed(123)
        a = augment(frames)
        torch.manual_seed(123)
        np.random.seed(999)  # numpy / python RNG must play no role
        b = augment(frames)
        torch.manual_seed(124)
        c = augment(frames)
        assert torch.equal(a, b)
        assert not torch.allclose(a, c, atol=1e-4)
        outs = []  # the data module's per-sample seeding: fork_rng + manual_seed
        for _ in range(2):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(7)
                outs.append(augment(frames))
        assert torch.equal(outs[0], outs[1])

    return check
