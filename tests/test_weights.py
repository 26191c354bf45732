"""Tests for talkinghead.weights: resolution order, clear errors, checksums, safe loading."""
from __future__ import annotations

import hashlib

import pytest
import torch

from talkinghead import weights
from talkinghead.cli import main


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture()
def scratch_asset():
    """A throw-away registry entry, removed afterwards."""
    names = []

    def make(**kwargs):
        item = weights.register_asset(weights.Asset(**kwargs))
        names.append(item.name)
        return item

    yield make
    for name in names:
        weights.ASSETS.pop(name, None)


def test_missing_file_names_it_and_says_where_to_get_and_put_it(home):
    with pytest.raises(weights.MissingWeightsError) as info:
        weights.resolve("syncnet_v2")
    message = str(info.value)
    assert "syncnet_v2.model" in message
    assert "robots.ox.ac.uk" in message  # where to get it
    assert str(home / "syncnet_v2.model") in message  # where to put it
    assert not weights.is_available("syncnet_v2")


def test_home_folder_is_found_first_and_loads_with_weights_only(home, scratch_asset):
    scratch_asset(name="test_state", file="sub/test_state.pth", source="here", purpose="a test")
    (home / "sub").mkdir()
    torch.save({"w": torch.arange(3.0)}, home / "sub" / "test_state.pth")
    assert weights.resolve("test_state") == home / "sub" / "test_state.pth"
    assert torch.equal(weights.load("test_state")["w"], torch.arange(3.0))


def test_pickled_objects_are_refused(home, scratch_asset):
    scratch_asset(name="test_pickle", file="evil.pth", source="here", purpose="a test")
    import pickle

    (home / "evil.pth").write_bytes(pickle.dumps({"f": print}, protocol=2))
    with pytest.raises(ValueError, match="evil.pth"):
        weights.load("test_pickle")


def test_checksum_mismatch_is_an_error(home, scratch_asset):
    (home / "x.bin").write_bytes(b"abc")
    scratch_asset(name="test_bad_sum", file="x.bin", source="here", purpose="a test", format="path", sha256="0" * 64)
    with pytest.raises(weights.WeightsChecksumError, match="x.bin"):
        weights.resolve("test_bad_sum")
    good = hashlib.sha256(b"abc").hexdigest()
    scratch_asset(name="test_good_sum", file="x.bin", source="here", purpose="a test", format="path", sha256=good)
    assert weights.resolve("test_good_sum") == home / "x.bin"


def test_files_shipped_by_packages_are_found(home):
    path = weights.resolve("dlib_landmarks68")
    assert path.name == "shape_predictor_68_face_landmarks.dat" and "face_recognition_models" in str(path)


def test_unknown_asset_lists_the_choices():
    with pytest.raises(KeyError, match="syncnet_v2"):
        weights.resolve("no_such_asset")


def test_cli_lists_every_asset(home, capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for name in weights.ASSETS:
        assert name in out
    assert "missing" in out and "present" in out
