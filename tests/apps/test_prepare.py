"""`rgnet-hf prepare` and `load_prepared`: own videos + annotations -> features, splits by video, manifest, card;
refusals, reruns that add only what is missing, and a kill followed by a rerun."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import datasets
import h5py
import numpy as np
import pytest
from conftest import accelerate_launch_command
from raw_video_utils import PALETTE, SENTENCES, build_tiny_clip, build_tiny_rgnet, make_test_video

from rgnet_hf.apps.cli import main as cli_main
from rgnet_hf.data import EvaluationVideoDataset, RGNetTrainingDataset, load_prepared
from rgnet_hf.data.own_annotations import EXTREMEWHENBENCH_COLUMNS
from rgnet_hf.data.prepared import InvalidAnnotationsError, PreparedDatasetError, load_manifest, prepare_dataset
from rgnet_hf.video_text_encoders import load_feature_encoder

SPF = 0.5
CONTAINERS = [".mp4", ".mkv", ".mov"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    clip = build_tiny_clip(root / "clip")
    videos = root / "videos"
    videos.mkdir()
    for index in range(7):
        colors = PALETTE[index : index + 3] + PALETTE[:3]  # 6 s each, different colours per video
        make_test_video(videos / f"video{index}{CONTAINERS[index % 3]}", colors, fps=5)
    rows = [
        {
            "qid": f"q{index}_{rank}",
            "video_id": f"video{index}",
            "question": SENTENCES[(index + rank) % len(SENTENCES)],
            "correct_interval": [float(rank), rank + 2.5],
            "video_duration_s": 6.0,
        }
        for index in range(7)
        for rank in range(3)
    ]
    return {"root": root, "clip": clip, "videos": videos, "rows": rows, "encoder": load_feature_encoder(clip)}


def _jsonl(path, rows):
    with open(path, "w") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def _prepare_args(annotations, assets, output, *extra):
    return [
        "prepare",
        "--annotations", str(annotations),
        "--videos", str(assets["videos"]),
        "--encoder", str(assets["clip"]),
        "--output", str(output),
        "--seconds-per-feature", str(SPF),
        "--columns", EXTREMEWHENBENCH_COLUMNS,
        "--no-progress",
        *extra,
    ]  # fmt: skip


def _contents(folder):
    """Everything a prepared folder holds that a rerun must reproduce: features, annotations, manifest (minus times)."""
    found = {}
    for name in ("video_features.h5", "text_features.h5", "sentence_features.h5"):
        with h5py.File(folder / name, "r") as handle:
            found[name] = {key: handle[key][()] for key in handle}
    found["annotations"] = {p.name: p.read_text() for p in sorted((folder / "annotations").iterdir())}
    manifest = load_manifest(folder)
    found["manifest"] = {k: v for k, v in manifest.items() if k != "inputs"}
    return found


def _assert_same(left, right):
    assert left.keys() == right.keys()
    for name in left:
        if isinstance(left[name], dict) and name.endswith(".h5"):
            assert left[name].keys() == right[name].keys(), name
            for key in left[name]:
                np.testing.assert_allclose(left[name][key], right[name][key], rtol=1e-5, atol=1e-6)
        else:
            assert left[name] == right[name], name


def test_prepare_from_extremewhenbench_columns_end_to_end(tmp_path, assets, capsys):
    annotations = _jsonl(tmp_path / "ewb.jsonl", assets["rows"])
    output = tmp_path / "data"
    assert cli_main(_prepare_args(annotations, assets, output)) == 0
    printed = capsys.readouterr().out
    assert "21 rows read, 21 valid" in printed and "7 video(s) encoded" in printed

    manifest = load_manifest(output)
    encoder = assets["encoder"]
    assert manifest["encoder"] == encoder.name and manifest["seconds_per_feature"] == SPF
    assert (manifest["video_feature_size"], manifest["text_feature_size"], manifest["sentence_feature_size"]) == (
        encoder.video_feature_size,
        encoder.text_feature_size,
        encoder.sentence_feature_size,
    )
    assert {split: c["videos"] for split, c in manifest["counts"].items()} == {"train": 5, "validation": 1, "test": 1}
    assert sum(c["queries"] for c in manifest["counts"].values()) == 21
    assert (
        manifest["inputs"]["annotations"]["fingerprint"]
        == "sha256:" + hashlib.sha256(annotations.read_bytes()).hexdigest()
    )
    recorded = manifest["inputs"]["videos"]["video1"]
    assert recorded["sha256"] == hashlib.sha256((assets["videos"] / "video1.mkv").read_bytes()).hexdigest()
    card = (output / "README.md").read_text()
    assert card.startswith("---\nlicense:") and f"`{encoder.name}`" in card and "| train | 5 |" in card

    dataset = load_prepared(output)
    assert dataset.seconds_per_feature == SPF and dataset.manifest["encoder"] == encoder.name
    # No query of one video lands in two splits, and every query is in one split.
    videos_per_split = {name: set(split["clip_id"]) for name, split in dataset.items()}
    assert not (videos_per_split["train"] & videos_per_split["validation"])
    assert not (videos_per_split["train"] & videos_per_split["test"])
    assert not (videos_per_split["validation"] & videos_per_split["test"])
    assert sorted(qid for split in dataset.values() for qid in split["query_id"]) == sorted(
        row["qid"] for row in assets["rows"]
    )
    # The features are the encoder's own outputs for that video and sentence.
    row = dataset["train"][0]
    video_file = next(assets["videos"].glob(row["clip_id"] + ".*"))
    expected = encoder.encode_video(video_file, SPF, progress=False)
    np.testing.assert_allclose(row["video_features"][:], expected.features, rtol=1e-5, atol=1e-6)
    assert row["duration"] == pytest.approx(expected.duration)
    query = encoder.encode_queries([row["query"]])[0]
    np.testing.assert_allclose(row["text_features"], query.token_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(row["sentence_features"], query.sentence_features, rtol=1e-5, atol=1e-6)
    source = next(r for r in assets["rows"] if r["qid"] == row["query_id"])
    assert row["timestamps"] == source["correct_interval"] and row["video_id"] == source["video_id"]


def test_prepared_data_feeds_training_and_evaluation(tmp_path, assets, capsys):
    from rgnet_hf import RGNetConfig

    output = tmp_path / "data"
    prepare_dataset(
        _jsonl(tmp_path / "rows.jsonl", assets["rows"]),
        assets["videos"],
        output,
        assets["encoder"],
        SPF,
        columns=EXTREMEWHENBENCH_COLUMNS,
        progress=False,
        log=lambda line: None,
    )
    dataset = load_prepared(output)
    manifest = dataset.manifest
    config = RGNetConfig.from_preset(
        "mad",
        video_feature_size=manifest["video_feature_size"],
        text_feature_size=manifest["text_feature_size"],
        sentence_feature_size=manifest["sentence_feature_size"],
        seconds_per_feature=SPF,
        window_length=8,
        max_text_length=7,
    )
    sample = RGNetTrainingDataset.from_config(dataset["train"], config, seed=0)[0]
    assert sample["video_features"].shape[-1] == manifest["video_feature_size"]
    items = list(EvaluationVideoDataset(dataset["test"]))
    assert len(items) == 1 and items[0]["video_features"].shape[-1] == manifest["video_feature_size"]

    # `rgnet-hf evaluate --data` on the folder: a model with the manifest's settings gets the table next to the
    # zero-shot baseline; one at another rate is refused by name before anything runs.
    from rgnet_hf import RGNetForVideoGrounding
    from rgnet_hf.data.prepared import prepared_model_settings

    fitting = RGNetConfig(**{**config.to_dict(), **prepared_model_settings(manifest)})
    RGNetForVideoGrounding(fitting).save_pretrained(tmp_path / "model")
    assert cli_main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(output), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_queries"] == len(dataset["test"]) and report["zero_shot"] is not None
    other_rate = RGNetConfig(**{**fitting.to_dict(), "seconds_per_feature": 1.0})
    RGNetForVideoGrounding(other_rate).save_pretrained(tmp_path / "other_rate")
    assert cli_main(["evaluate", "--model", str(tmp_path / "other_rate"), "--data", str(output)]) == 2
    assert "seconds_per_feature: model 1.0, data 0.5" in capsys.readouterr().err


def test_invalid_rows_fail_unless_skip_invalid(tmp_path, assets, capsys):
    rows = [dict(r) for r in assets["rows"][:6]]
    rows[1]["video_id"] = "absent"
    rows[2]["correct_interval"] = [4.0, 30.0]
    rows[3]["question"] = ""
    annotations = _jsonl(tmp_path / "bad.jsonl", rows)
    output = tmp_path / "data"
    assert cli_main(_prepare_args(annotations, assets, output)) == 1
    captured = capsys.readouterr()
    assert "6 rows read, 3 valid" in captured.out and "missing_video" in captured.out
    assert "--skip-invalid" in captured.err
    assert not output.exists()  # nothing is encoded from a failing table, and no empty folder is left behind
    # The rows are checked before the encoder is loaded: a failing table does not wait for (or need) it.
    args = _prepare_args(annotations, assets, output)
    args[args.index("--encoder") + 1] = str(tmp_path / "no_such_encoder")
    assert cli_main(args) == 1
    assert "missing_video" in capsys.readouterr().out

    assert cli_main(_prepare_args(annotations, assets, output, "--skip-invalid")) == 0
    manifest = load_manifest(output)
    assert set(manifest["report"]["failed"]) == {"missing_video", "moment_outside_video", "empty_sentence"}
    assert sum(c["queries"] for c in manifest["counts"].values()) == 3


def test_split_column_from_a_saved_dataset(tmp_path, assets):
    rows = [dict(row, part="test" if row["video_id"] == "video0" else "train") for row in assets["rows"]]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "saved")
    output = tmp_path / "data"
    columns = EXTREMEWHENBENCH_COLUMNS + ",split=part"
    result = prepare_dataset(
        tmp_path / "saved", assets["videos"], output, assets["encoder"], SPF, columns=columns, progress=False,
        log=lambda line: None,
    )  # fmt: skip
    assert result.manifest["split_rule"]["source"] == "column"
    dataset = load_prepared(output)
    assert set(dataset) == {"train", "test"} and set(dataset["test"]["clip_id"]) == {"video0"}


def test_rerun_with_new_rows_encodes_only_what_is_missing(tmp_path, assets):
    output = tmp_path / "data"
    first_rows = [row for row in assets["rows"] if row["video_id"] != "video6"][:15]
    first = prepare_dataset(
        _jsonl(tmp_path / "first.jsonl", first_rows), assets["videos"], output, assets["encoder"], SPF,
        columns=EXTREMEWHENBENCH_COLUMNS, progress=False, log=lambda line: None,
    )  # fmt: skip
    assert len(first.videos_encoded) == 5 and first.sentences_encoded == 15
    second = prepare_dataset(
        _jsonl(tmp_path / "all.jsonl", assets["rows"]), assets["videos"], output, assets["encoder"], SPF,
        columns=EXTREMEWHENBENCH_COLUMNS, progress=False, log=lambda line: None,
    )  # fmt: skip
    assert len(second.videos_encoded) == 2 and len(second.videos_reused) == 5
    assert second.sentences_encoded == 6 and second.sentences_reused == 15
    # Known videos keep their split.
    before, after = first.manifest["video_splits"], second.manifest["video_splits"]
    assert all(after[stem] == split for stem, split in before.items())

    # A clean run on all rows gives the same folder.
    clean = tmp_path / "clean"
    prepare_dataset(
        tmp_path / "all.jsonl", assets["videos"], clean, assets["encoder"], SPF, columns=EXTREMEWHENBENCH_COLUMNS,
        progress=False, log=lambda line: None,
    )  # fmt: skip
    clean_contents, rerun_contents = _contents(clean), _contents(output)
    assert clean_contents["manifest"]["counts"] == rerun_contents["manifest"]["counts"]
    for name in ("video_features.h5", "text_features.h5", "sentence_features.h5"):
        _assert_same({name: clean_contents[name]}, {name: rerun_contents[name]})

    # A row whose sentence changed under the same id is encoded again; nothing else is.
    changed = [dict(row) for row in assets["rows"]]
    changed[0]["question"] = "the camera pans over the city."
    third = prepare_dataset(
        _jsonl(tmp_path / "changed.jsonl", changed), assets["videos"], output, assets["encoder"], SPF,
        columns=EXTREMEWHENBENCH_COLUMNS, progress=False, log=lambda line: None,
    )  # fmt: skip
    assert third.sentences_encoded == 1 and third.videos_encoded == []
    row = next(r for split in load_prepared(output).values() for r in split if r["query_id"] == changed[0]["qid"])
    expected = assets["encoder"].encode_queries([changed[0]["question"]])[0]
    np.testing.assert_allclose(row["text_features"], expected.token_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(row["sentence_features"], expected.sentence_features, rtol=1e-5, atol=1e-6)


def test_refusals(tmp_path, assets, capsys):
    annotations = _jsonl(tmp_path / "rows.jsonl", assets["rows"][:6])
    output = tmp_path / "data"
    assert cli_main(_prepare_args(annotations, assets, output)) == 0
    # Another rate into the same folder: its features would be read at wrong times.
    args = _prepare_args(annotations, assets, output)
    args[args.index("--seconds-per-feature") + 1] = "0.25"
    assert cli_main(args) == 2
    assert "another --output" in capsys.readouterr().err
    assert cli_main(_prepare_args(annotations, assets, tmp_path / "x", "--splits", "train=0.5,test=0.2")) == 2
    assert "add up to 1" in capsys.readouterr().err
    assert cli_main(_prepare_args(annotations, assets, tmp_path / "x", "--splits", "train=0.9,dev=0.1")) == 2
    assert "unknown split 'dev'" in capsys.readouterr().err
    # A folder of other files is never written into (its README.md would be replaced).
    other = tmp_path / "project"
    other.mkdir()
    (other / "README.md").write_text("my project\n")
    assert cli_main(_prepare_args(annotations, assets, other)) == 2
    assert "holds other files" in capsys.readouterr().err and (other / "README.md").read_text() == "my project\n"
    with pytest.raises(ValueError, match="has no split"):
        load_prepared(output, splits=["nothing"])
    shutil.rmtree(output / "annotations")
    with pytest.raises(PreparedDatasetError, match="rerun `rgnet-hf prepare`"):
        load_prepared(output)


def test_a_second_run_on_the_same_folder_is_refused_and_changes_nothing(tmp_path, assets, capsys):
    """Two runs into one folder would delete each other's feature parts and interleave the manifest: the second
    stops at once with the holder named, whether it is another prepare or an extract into the folder's feature file."""
    from rgnet_hf.data.feature_cache import lock_output

    annotations = _jsonl(tmp_path / "rows.jsonl", assets["rows"][:6])
    output = tmp_path / "data"
    assert cli_main(_prepare_args(annotations, assets, output)) == 0
    capsys.readouterr()
    before = _contents(output)
    names = sorted(path.name for path in output.iterdir())
    more = _jsonl(tmp_path / "more.jsonl", assets["rows"][:12])  # a rerun that would encode two more videos
    with lock_output(output / "video_features.h5"):  # what a running prepare or extract holds
        assert cli_main(_prepare_args(more, assets, output)) == 2
        assert f"being written by another run (process {os.getpid()}" in capsys.readouterr().err
        extract = ["extract", "--video", str(assets["videos"]), "--encoder", str(assets["clip"]), "--no-progress"]
        assert cli_main(extract + ["--output", str(output / "video_features.h5")]) == 2
        assert "being written by another run" in capsys.readouterr().err
    assert sorted(path.name for path in output.iterdir()) == names
    _assert_same(_contents(output), before)
    assert cli_main(_prepare_args(more, assets, output)) == 0
    assert "2 video(s) encoded, 2 reused" in capsys.readouterr().out


def test_prepare_for_a_model_takes_its_encoder_and_rate(tmp_path, assets, capsys):
    model = build_tiny_rgnet(tmp_path / "model", assets["clip"], seconds_per_feature=1.0)
    annotations = _jsonl(tmp_path / "rows.jsonl", assets["rows"][:6])
    args = _prepare_args(annotations, assets, tmp_path / "data")
    at = args.index("--encoder")
    args[at : at + 2] = ["--model", str(model)]
    rate = args.index("--seconds-per-feature")
    del args[rate : rate + 2]
    assert cli_main(args) == 0
    manifest = load_manifest(tmp_path / "data")
    assert manifest["seconds_per_feature"] == 1.0 and manifest["encoder"] == str(assets["clip"].resolve())
    assert cli_main(args + ["--seconds-per-feature", "0.5"]) == 2
    assert "differs from the model's 1.0 s" in capsys.readouterr().err


def test_two_cpu_processes_prepare_the_same_data(tmp_path, assets):
    annotations = _jsonl(tmp_path / "rows.jsonl", assets["rows"])
    single = tmp_path / "single"
    prepare_dataset(
        annotations, assets["videos"], single, assets["encoder"], SPF, columns=EXTREMEWHENBENCH_COLUMNS,
        progress=False, log=lambda line: None,
    )  # fmt: skip
    parallel = tmp_path / "parallel"
    command = accelerate_launch_command(2, "-m", "rgnet_hf.apps.cli", *_prepare_args(annotations, assets, parallel))
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "encoded by the main process" in done.stdout
    _assert_same(_contents(single), _contents(parallel))


KILLED_RUN = """
import os, signal, sys
from rgnet_hf.data.prepared import prepare_dataset
from rgnet_hf.video_text_encoders import load_feature_encoder

encoder = load_feature_encoder({clip!r})
stage, calls = {stage!r}, []
real_video, real_text = encoder.encode_video, encoder.encode_queries


def encode_video(*args, **kwargs):
    calls.append(1)
    if stage == "video" and len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up code runs, as in a crash or an OOM kill
    return real_video(*args, **kwargs)


def encode_queries(*args, **kwargs):
    if stage == "text":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_text(*args, **kwargs)


encoder.encode_video, encoder.encode_queries = encode_video, encode_queries
prepare_dataset({annotations!r}, {videos!r}, {output!r}, encoder, {spf}, columns={columns!r}, progress=False,
                log=lambda line: None)
"""


@pytest.mark.parametrize("stage", ["video", "text"])
def test_sigkill_then_rerun_gives_the_same_data_as_an_uninterrupted_run(tmp_path, assets, stage):
    everything = _jsonl(tmp_path / "all.jsonl", assets["rows"])
    arguments = dict(columns=EXTREMEWHENBENCH_COLUMNS, progress=False, log=lambda line: None)
    output = tmp_path / "killed"
    first = None
    if stage == "text":
        # The kill hits a rerun with new rows: the folder of the first run must not pass for the new one.
        subset = _jsonl(tmp_path / "subset.jsonl", [r for r in assets["rows"] if r["video_id"] != "video6"])
        first = prepare_dataset(subset, assets["videos"], output, assets["encoder"], SPF, **arguments)
    script = KILLED_RUN.format(
        clip=str(assets["clip"]),
        stage=stage,
        annotations=str(everything),
        videos=str(assets["videos"]),
        output=str(output),
        spf=SPF,
        columns=EXTREMEWHENBENCH_COLUMNS,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == -9, done.stderr[-3000:]
    with pytest.raises(PreparedDatasetError, match="did not finish"):
        load_prepared(output)
    resumed = prepare_dataset(everything, assets["videos"], output, assets["encoder"], SPF, **arguments)
    if stage == "video":
        assert len(resumed.videos_reused) == 2  # the two videos finished before the kill
    else:
        assert len(resumed.videos_reused) == 7 and resumed.sentences_encoded == 3
        assert all(resumed.manifest["video_splits"][k] == v for k, v in first.manifest["video_splits"].items())
    clean = tmp_path / "clean"
    prepare_dataset(everything, assets["videos"], clean, assets["encoder"], SPF, **arguments)
    if stage == "video":
        _assert_same(_contents(clean), _contents(output))
    else:
        contents = _contents(output)
        for name in ("video_features.h5", "text_features.h5", "sentence_features.h5"):
            _assert_same({name: _contents(clean)[name]}, {name: contents[name]})
    assert not (output / "manifest.previous.json").exists()


def test_a_video_that_fails_to_decode_is_reported_and_a_failed_rerun_keeps_the_last_folder(tmp_path, assets, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(assets["videos"], videos)
    output = tmp_path / "data"
    arguments = dict(columns=EXTREMEWHENBENCH_COLUMNS, progress=False, log=print)
    rows = assets["rows"][:6]
    prepare_dataset(_jsonl(tmp_path / "good.jsonl", rows), videos, output, assets["encoder"], SPF, **arguments)
    before = load_manifest(output)
    # A cut file (an interrupted copy) opens, declares its whole length, and fails when its frames are decoded.
    whole = make_test_video(tmp_path / "whole.mkv", PALETTE, seconds_per_color=2.0, fps=5)
    (videos / "cut.mkv").write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.4)])
    cut_row = dict(rows[0], qid="cut", video_id="cut", correct_interval=[1.0, 2.0], video_duration_s=20.0)
    more = _jsonl(tmp_path / "more.jsonl", rows + [cut_row])
    capsys.readouterr()
    with pytest.raises(InvalidAnnotationsError, match="after decoding the videos"):
        prepare_dataset(more, videos, output, assets["encoder"], SPF, **arguments)
    assert "video_not_decoded" in capsys.readouterr().out
    assert load_manifest(output) == before  # the last finished folder is whole
    assert sum(len(split) for split in load_prepared(output).values()) == 6
    result = prepare_dataset(more, videos, output, assets["encoder"], SPF, skip_invalid=True, **arguments)
    assert result.manifest["report"]["failed"]["video_not_decoded"]["count"] == 1
    assert sum(c["queries"] for c in result.manifest["counts"].values()) == 6
