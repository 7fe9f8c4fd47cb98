"""Run folders: no code execution, no path escapes, no lost runs, one writer, hashed epochs."""

import json
import pickle

import numpy as np
import pytest
import torch

from spikequant import runfolder
from spikequant.checkpoint import load_checkpoint, save_checkpoint
from spikequant.errors import CheckpointError, RunFolderError


def _epoch(run, epoch, value=1.0):
    return runfolder.save_epoch(
        run,
        epoch=epoch,
        model_state={"w": torch.full((3,), value)},
        meta={"model": {"name": "mlp", "kwargs": {}}},
        trainer_state={
            "epoch": epoch,
            "rng": {"numpy": np.random.get_state(), "python": (3, (1, 2), None)},
            "optimizer": {"state": {0: {"step": torch.tensor(2.0)}}, "param_groups": []},
        },
    )


class Payload:
    """Unpickling this runs code (writes a file): what a malicious run folder would hold."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_trainer_state_round_trips_without_pickle(tmp_path):
    _epoch(tmp_path, 1)
    state, meta, trainer = runfolder.load_epoch(tmp_path)
    assert torch.equal(state["w"], torch.ones(3)) and meta["epoch"] == 1
    assert trainer["optimizer"]["state"][0]["step"].item() == 2.0  # int keys survive
    assert trainer["rng"]["python"] == (3, (1, 2), None)  # tuples survive
    saved = trainer["rng"]["numpy"]
    assert saved[0] == "MT19937" and saved[1].dtype == np.uint32
    np.random.set_state(saved)  # numpy accepts it back
    files = sorted(p.name for p in (tmp_path / "checkpoints" / "epoch_0001").iterdir())
    assert files == [
        "meta.json",
        "model.safetensors",
        "trainer_state.json",
        "trainer_state.safetensors",
    ]


def test_a_pickled_payload_in_the_run_folder_is_never_unpickled(tmp_path):
    folder = _epoch(tmp_path, 1)
    marker = tmp_path / "pwned"
    # the old layout's pickle, and a pickle in place of the JSON state: neither is executed
    (folder / "trainer_state.pt").write_bytes(pickle.dumps(Payload(marker)))
    (folder / "trainer_state.json").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError):
        runfolder.load_epoch(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "pointer",
    [
        "/",
        "..",
        ".",
        "checkpoints/../..",
        "checkpoints",
        "/tmp/victim",
        "checkpoints/epoch_0001/../../x",
    ],
)
def test_latest_json_cannot_point_outside_the_checkpoints(tmp_path, pointer):
    run = tmp_path / "run"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    _epoch(run, 1)
    (run / "latest.json").write_text(json.dumps({"epoch": 1, "checkpoint": pointer}))
    with pytest.raises(CheckpointError, match="refused"):
        runfolder.load_epoch(run)
    _epoch(run, 2)  # saving the next epoch deletes only epoch folders under checkpoints/
    assert (victim / "keep.txt").read_text() == "precious"
    assert (run / "checkpoints" / "epoch_0002" / "meta.json").is_file()
    assert (run / "checkpoints").is_dir()


def test_symlinked_epoch_pointing_outside_is_refused(tmp_path):
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    _epoch(outside, 1)
    _epoch(run, 1)
    (run / "checkpoints" / "epoch_0005").symlink_to(outside / "checkpoints" / "epoch_0001")
    (run / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/epoch_0005"}))
    with pytest.raises(CheckpointError, match="refused"):
        runfolder.load_epoch(run)
    _epoch(run, 2)
    _epoch(run, 3)  # old epochs are pruned, the link target is not touched
    assert (outside / "checkpoints" / "epoch_0001" / "meta.json").is_file()


def test_damaged_newest_epoch_falls_back_to_the_previous_one(tmp_path, capsys):
    _epoch(tmp_path, 1, value=1.0)
    newest = _epoch(tmp_path, 2, value=2.0)
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit: same size, still parseable, wrong hash
    (newest / "model.safetensors").write_bytes(bytes(data))
    state, meta, _ = runfolder.load_epoch(tmp_path)
    assert meta["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    err = capsys.readouterr().err
    assert "does not match its SHA-256" in err and err.count("\n") == 1
    (tmp_path / "latest.json").write_bytes(b"\xff\xfe not json")  # unreadable pointer too
    _, meta, _ = runfolder.load_epoch(tmp_path)
    assert meta["epoch"] == 1


def test_checkpoint_hashes_cover_every_file(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {"model": {"name": "m"}}, {"x.json": b"{}"})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert set(meta["files"]) == {"model.safetensors", "x.json"}
    (tmp_path / "x.json").write_bytes(b"[]")
    with pytest.raises(CheckpointError, match="x.json does not match"):
        load_checkpoint(tmp_path)


def test_a_folder_holding_a_run_is_not_reused_without_asking(tmp_path):
    run = tmp_path / "run"
    _epoch(run, 3)
    (run / "metrics.json").write_text("{}")
    with pytest.raises(RunFolderError, match="already holds a run; pass --resume"):
        runfolder.prepare(run, resume=False, overwrite=False)
    assert (run / "checkpoints" / "epoch_0003" / "meta.json").is_file()
    runfolder.prepare(run, resume=True, overwrite=False)  # resuming is fine
    (run / "notes.txt").write_text("mine")
    runfolder.prepare(run, resume=False, overwrite=True)  # replaces the run's own files only
    assert not (run / "metrics.json").exists() and not runfolder.epoch_folders(run)
    assert (run / "notes.txt").read_text() == "mine"


def test_output_path_problems_are_found_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunFolderError, match="is not a folder"):
        runfolder.prepare(blocker, resume=False, overwrite=False)
    with pytest.raises(RunFolderError, match="not writable|not a folder"):
        runfolder.prepare(blocker / "sub", resume=False, overwrite=False)


def test_lock_refuses_a_second_writer_and_recovers_a_dead_ones(tmp_path):
    with runfolder.RunLock(tmp_path):
        with pytest.raises(RunFolderError, match="being written by another process"):
            with runfolder.RunLock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()
    import socket

    # a lock left by a process that no longer exists is taken over
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 7}))
    with runfolder.RunLock(tmp_path):
        pass


def test_malformed_trainer_state_is_a_checkpoint_error(tmp_path):
    folder = _epoch(tmp_path, 1)
    (folder / "trainer_state.json").write_text('{"a": {"$tensor": "missing"}}')
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"].pop("trainer_state.json")
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="malformed"):
        runfolder.read_state(folder)
