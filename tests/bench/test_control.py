"""The factor-control matrix: a method that follows one driver moves only that row."""
import json
import warnings

import numpy as np
import pytest

from talkinghead.bench.control import DRIVERS, GROUPS, _rms_over_measured_frames, control_clips, control_matrix
from talkinghead.bench.harness import BenchConfig, run_benchmark
from talkinghead.bench.methods import METHODS, build_method, register_method
from talkinghead.bench.protocol import get_protocol, select_clips


class PoseSourcePlayer:
    """Plays its pose source: everything in the output follows the pose driver, nothing else."""

    name = "bench_test_pose_player"

    def generate(self, request):
        return request.pose_source


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_method(PoseSourcePlayer.name)(lambda checkpoint, device: PoseSourcePlayer())
    yield
    METHODS.pop(PoseSourcePlayer.name, None)


def test_a_pose_follower_moves_only_on_its_pose_row(synth_vox2_store):
    from talkinghead.data.store import ClipStore

    store = ClipStore(synth_vox2_store)
    selections, _ = select_clips(store, get_protocol("synth", store=str(synth_vox2_store), split="train",
                                                     num_clips=3))
    shared = control_clips(store, selections, clips=3)
    follower = control_matrix(PoseSourcePlayer(), shared, log=lambda m: None)
    static = control_matrix(build_method("static"), shared, log=lambda m: None)
    rows = dict(zip(DRIVERS, follower.values))
    # the other clip's frames: its pose, mouth, blinks ... all change
    assert rows["pose"][GROUPS.index("pose")] > 0.5 and rows["pose"][GROUPS.index("mouth")] > 0.5
    for driver in ("lip", "eye", "emotion"):
        assert rows[driver] == pytest.approx([0.0] * len(GROUPS), abs=1e-6), driver
    assert all(v == pytest.approx(0.0, abs=1e-6) for row in static.values for v in row)
    assert follower.clips == 3 and not follower.errors


def test_bench_writes_the_matrix_table_and_heat_map(synth_vox2_store, tmp_path):
    config = BenchConfig(protocol="synth", store=str(synth_vox2_store), split="train", num_clips=2,
                         methods=["static", PoseSourcePlayer.name], metrics=["factor_control"],
                         bench_root=str(tmp_path), out=str(tmp_path / "run"), wandb=False, progress=False,
                         samples=0, control_matrix=True, control_clips=2, command=["pytest"])
    result = run_benchmark(config, log=lambda m: None)
    assert [m.method for m in result.control] == ["static", PoseSourcePlayer.name]
    table = (tmp_path / "run" / "table.md").read_text()
    assert "Factor-control matrix" in table and "| pose |" in table
    assert (tmp_path / "run" / "plots" / "control_matrix.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "run" / "control_matrix.json").read_text())
    assert saved[1]["values"][DRIVERS.index("pose")][GROUPS.index("pose")] > 0.5


def test_cell_rms_leaves_out_frames_and_features_never_measured():
    # feature 0: changes 3 and 4 with one frame unmeasured; feature 1: no face in any frame
    delta = np.array([[3.0, np.nan], [np.nan, np.nan], [4.0, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an all-NaN feature must not warn (it did: "mean of empty slice")
        rms = _rms_over_measured_frames(delta)
    assert rms == pytest.approx([np.sqrt(12.5)])
    assert _rms_over_measured_frames(np.full((4, 2), np.nan)).size == 0
