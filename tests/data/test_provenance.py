"""Telling a SynthTalk clip store from a real corpus's (`talkinghead.data.provenance`)."""
from __future__ import annotations

import json
import shutil

import numpy as np

from talkinghead.data.provenance import SYNTHTALK_MARKER, synthtalk_evidence


def test_synthtalk_store_is_recognised_by_its_corpus_or_its_clips(synth_vox2_store, synth_vox2, tmp_path):
    assert (synth_vox2 / SYNTHTALK_MARKER).is_file()
    assert SYNTHTALK_MARKER in synthtalk_evidence(synth_vox2_store)
    # a copy whose raw corpus is gone: the clips' ground truth still tells
    copy = tmp_path / "copy"
    shutil.copytree(synth_vox2_store, copy)
    report = json.loads((copy / "report.json").read_text())
    (copy / "report.json").write_text(json.dumps({**report, "root": str(tmp_path / "deleted")}))
    assert "SynthTalk ground truth" in synthtalk_evidence(copy)


def test_real_corpus_store_is_not_synthtalk(tmp_path):
    store = tmp_path / "vox2"
    (store / "clips").mkdir(parents=True)
    np.savez(store / "clips" / "a.npz", frames=np.zeros(3), landmarks=np.zeros((1, 68, 2)))
    (store / "index.json").write_text(json.dumps([{"clip_id": "a", "file": "clips/a.npz"}]))
    corpus = tmp_path / "VoxCeleb2"
    corpus.mkdir()
    (store / "report.json").write_text(json.dumps({"root": str(corpus)}))
    assert synthtalk_evidence(store) is None
    assert synthtalk_evidence(tmp_path / "absent") is None
