"""Uniform run records: directions, ranking, training-run lineage, old lines read."""
import json

from talkinghead.bench.records import column_direction, normalise, rank_key, read_records, training_run


def test_signed_columns_rank_by_absolute_value():
    assert column_direction("NLSE-C", False) == "zero"
    assert column_direction("LSE-C", True) == "higher" and column_direction("LMD", False) == "lower"
    values = {"static": -0.942, "ground_truth": -0.009, "pcavs": 0.3}
    order = sorted(values, key=lambda m: rank_key("zero", values[m]))
    assert order == ["ground_truth", "pcavs", "static"]
    assert rank_key("higher", None) == float("inf") and rank_key("higher", 2.0) < rank_key("higher", 1.0)


def test_training_run_from_staged_layout(tmp_path):
    stage = tmp_path / "pdfgc-run" / "expression"
    (stage / "checkpoints").mkdir(parents=True)
    (stage / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (stage / "wandb_id").write_text("abc123\n")
    (stage / "config.yaml").write_text("name: synth\n")
    run = training_run(stage / "checkpoints" / "last.ckpt")
    assert run["name"] == "pdfgc-run" and run["stage"] == "expression" and run["wandb_id"] == "abc123"
    assert run["config"].endswith("expression/config.yaml")
    assert training_run(None) is None and training_run(tmp_path / "model.pt") is None
    assert training_run(tmp_path)["stage"] is None  # a folder of official weights


def test_read_records_normalises_old_lines(tmp_path):
    old = {"run": "r1", "method": "static", "protocol": "synth", "results": {"LSE-C": 1.0, "LMD": 3.0}, "na": {}}
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n")
    (record,) = read_records([tmp_path])
    assert record["record_id"] == "r1/static" and record["directions"] == {"LSE-C": "higher", "LMD": "lower"}
