"""CSIM: cosine similarity of face embeddings (dlib's descriptor offline; ArcFace's network)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead import weights
from talkinghead.data.faces import detect_landmarks
from talkinghead.data.store import ClipStore
from talkinghead.metrics import build_metric
from talkinghead.metrics.csim import (
    CSIM,
    ArcFaceEmbedding,
    DlibFaceEmbedding,
    IResNet,
    build_embedding,
    cosine_similarity,
    iresnet100,
)

pytest.importorskip("dlib")


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def embedding() -> DlibFaceEmbedding:
    return DlibFaceEmbedding()


@pytest.fixture(scope="module")
def clips(synth_vox2_store, embedding) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per SynthTalk identity: (reference frame (224, 224, 3), three later frames (3, 224, 224, 3)).
    The reference is the first of frames 0-9 where dlib finds a face."""
    store = ClipStore(synth_vox2_store)
    out = []
    for clip in range(len(store)):
        candidates = store.load_frames(clip, range(10))
        _, found = embedding(candidates)
        assert found.any()
        out.append((candidates[int(np.argmax(found))], store.load_frames(clip, [16, 26, 36])))
    return out


def test_registered_and_named(embedding):
    metric = build_metric("csim", embedding=embedding)
    assert isinstance(metric, CSIM) and CSIM.inputs == ("fake", "reference")
    assert metric.embedding_name == "dlib-resnet128" and CSIM.columns == {"CSIM": True}


def test_same_image_is_one(clips, embedding):
    reference, _ = clips[0]
    metric = CSIM(embedding=embedding)
    metric.update(_tensor(reference[None]), _tensor(reference[None])[0])
    assert metric.compute()["CSIM"].item() == pytest.approx(1.0, abs=1e-5)


def test_same_identity_beats_other_identities(clips, embedding):
    references, found = embedding(np.stack([ref for ref, _ in clips]))
    assert found.all()
    same, other = [], []
    for k, (_, frames) in enumerate(clips):
        emb, ok = embedding(frames)
        assert ok.sum() >= 2  # dlib's HOG detector may miss a synthetic frame now and then
        scores = [cosine_similarity(emb[ok], ref).mean() for ref in references]
        same.append(scores[k])
        other.append(max(s for j, s in enumerate(scores) if j != k))
    assert all(s > o for s, o in zip(same, other)), (same, other)  # own reference wins for each
    # the metric itself, for one identity against its own reference and another's
    metric_same, metric_other = CSIM(embedding=embedding), CSIM(embedding=embedding)
    metric_same.update(_tensor(clips[0][1]), _tensor(clips[0][0][None])[0])
    metric_other.update(_tensor(clips[0][1]), _tensor(clips[1][0][None])[0])
    assert metric_same.compute()["CSIM"] > metric_other.compute()["CSIM"]
    assert metric_same.compute()["CSIM"].item() == pytest.approx(same[0], abs=1e-5)


def test_faceless_reference_skips_the_clip(clips, embedding):
    reference, frames = clips[0]
    metric = CSIM(embedding=embedding)
    metric.update(_tensor(frames), torch.full((3, 224, 224), 0.5))
    assert metric.skipped_clips.item() == 1 and metric.clips.item() == 0
    frames = frames.copy()
    frames[0] = 128  # one generated frame without a face
    _, found = embedding(frames)
    assert not found[0] and found.any()
    metric.update(_tensor(frames), _tensor(reference[None])[0])
    assert metric.skipped_frames.item() == 3 + (~found).sum() and metric.measured_frames.item() == found.sum()
    assert 0.5 < metric.compute()["CSIM"].item() <= 1.0


def test_auto_embedding_falls_back_to_dlib(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path))  # no arcface_r100.pth there
    assert not weights.is_available("arcface_r100")
    assert build_embedding("auto").name == "dlib-resnet128"
    with pytest.raises(weights.MissingWeightsError, match="arcface_r100"):
        build_embedding("arcface")


def test_iresnet100_has_insightface_parameter_names():
    state = iresnet100().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["conv1.weight"] == (64, 3, 3, 3) and shapes["prelu.weight"] == (64,)
    assert shapes["layer1.0.downsample.0.weight"] == (64, 64, 1, 1)
    assert shapes["layer1.0.bn1.weight"] == (64,) and shapes["layer1.0.prelu.weight"] == (64,)
    assert shapes["layer2.12.conv2.weight"] == (128, 128, 3, 3)
    assert "layer3.29.bn3.running_var" in shapes and "layer3.30.bn1.weight" not in shapes
    assert shapes["layer4.2.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["bn2.weight"] == (512,) and shapes["fc.weight"] == (512, 512 * 7 * 7)
    assert shapes["features.running_mean"] == (512,)
    # 1 stem conv + 49 blocks x 2 convs + 4 downsample convs
    assert sum(1 for k in shapes if k.endswith("weight") and len(shapes[k]) == 4) == 1 + 49 * 2 + 4


def test_arcface_pipeline_with_a_small_network(clips):
    torch.manual_seed(0)
    network = IResNet((1, 1, 1, 1), num_features=64, widths=(8, 8, 16, 16))
    embedder = ArcFaceEmbedding(network=network)
    reference, frames = clips[0]
    crop = embedder.align(reference, detect_landmarks(reference[None])[0][0])
    assert crop.shape == (112, 112, 3)
    emb, found = embedder(np.concatenate([reference[None], frames[:1], np.full((1, 224, 224, 3), 128, np.uint8)]))
    assert emb.shape == (3, 64) and list(found) == [True, True, False] and np.isnan(emb[2]).all()
    metric = CSIM(embedding=embedder)
    assert metric.embedding_name == "arcface-r100"
    metric.update(_tensor(reference[None]), _tensor(reference[None])[0])
    assert metric.compute()["CSIM"].item() == pytest.approx(1.0, abs=1e-5)


def test_torch_network_equals_dlib_network(clips):
    """The default torch ResNet gives dlib's own descriptors (float precision) and the same faces."""
    frames = np.concatenate([later for _, later in clips])
    ours, found = DlibFaceEmbedding()(frames)
    theirs, found_dlib = DlibFaceEmbedding(network="dlib")(frames)
    assert found.any() and np.array_equal(found, found_dlib)
    assert np.abs(ours[found] - theirs[found]).max() < 1e-5
    with pytest.raises(ValueError, match="network"):
        DlibFaceEmbedding(network="tf")
