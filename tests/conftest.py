"""Shared fixtures: tiny SynthTalk corpora, generated once per test session."""
from __future__ import annotations

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


TINY_VOX2 = SynthConfig(layout="vox2", train_identities=3, test_identities=1, clips_per_video=1, duration=1.6)


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
