"""Faults a training job meets in real life (issue 18): SIGTERM, a second writer, a run that died
before its first checkpoint, a run directory that is a file, a full disk, a NaN reward.

Training runs are tiny C-MuJoCo cartpole runs; the SIGTERM test runs `python -m ksimdsl.cli` as a
subprocess, as SLURM or Kubernetes would stop it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ksimdsl import cli
from ksimdsl.errors import KsimError
from ksimdsl.runtime.training.runs import MetricsLog
from ksimdsl.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = REPO / "tasks" / "cartpole.ksim"
TINY = ("engine=mujoco", "num_envs=4", "minibatches=2", "rollout=8", "epochs=1", "video=false", "--no-progress")

_HOLD_LOCK = """
import sys, time
from ksimdsl.runtime.training.runlock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def run_main(capsys: pytest.CaptureFixture, *args: object) -> SimpleNamespace:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def _iterations(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines]


def test_sigterm_stops_training_cleanly_with_a_checkpoint_and_exit_130(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-m", "ksimdsl.cli", "train", str(CARTPOLE), *TINY, "steps=100000",
         "checkpoint_every=0", "--run-dir", str(run_dir)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().strip()):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no training iteration within 300 s"
            time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "interrupted (SIGTERM); checkpoint written to" in out
    done = _iterations(run_dir)[-1]
    assert (run_dir / "checkpoints" / f"ckpt_{done:08d}.safetensors").is_file()


def test_a_second_writer_of_a_run_directory_is_refused_with_the_holders_pid(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = run_main(capsys, "train", CARTPOLE, *TINY, "steps=1", "--run-dir", run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert f"is in use by process {holder.pid}" in result.stderr
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()


def test_a_run_that_died_before_its_first_checkpoint_can_be_resumed_and_reused(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    first = run_main(capsys, "train", CARTPOLE, *TINY, "steps=1", "--run-dir", run_dir)
    assert first.returncode == 0, first.stderr
    # what a kill during the first iteration leaves: config, kernels, metrics, no checkpoint
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / ".ckpt-killed.tmp").write_bytes(b"partial write")

    resumed = run_main(capsys, "train", "--resume", run_dir, "steps=1", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "starting at iteration 0" in resumed.stdout
    assert _iterations(run_dir) == [1]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt_00000001.safetensors"]

    shutil.rmtree(run_dir / "checkpoints")
    again = run_main(capsys, "train", CARTPOLE, *TINY, "steps=1", "--run-dir", run_dir)
    assert again.returncode == 0, again.stderr
    assert _iterations(run_dir) == [1]

    # a run with a checkpoint is never overwritten by a new one
    taken = run_main(capsys, "train", CARTPOLE, *TINY, "steps=1", "--run-dir", run_dir)
    assert taken.returncode == 2 and "already exists and is not empty" in taken.stderr


def test_run_directory_that_is_a_file_is_a_one_line_user_error(tmp_path, capsys) -> None:
    for target in (tmp_path / "a_file", Path(os.devnull)):
        if target != Path(os.devnull):
            target.write_text("x")
        result = run_main(capsys, "train", CARTPOLE, *TINY, "steps=1", "--run-dir", target)
        assert result.returncode == 2
        assert "exists and is not a directory" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_while_logging_is_a_user_error(tmp_path) -> None:
    os.symlink("/dev/full", tmp_path / "metrics.jsonl")
    log = MetricsLog(tmp_path, tensorboard=False)
    with pytest.raises(KsimError, match="cannot write .*metrics.jsonl: No space left on device"):
        log.write({"iteration": 1, "env_steps": 8})
        log.write({"iteration": 2, "env_steps": 16})


def test_max_seconds_without_steps_trains_until_the_time() -> None:
    assert TrainSettings().iteration_limit == 100
    assert TrainSettings(max_seconds=300.0).iteration_limit is None
    assert TrainSettings(max_seconds=300.0, steps=7).iteration_limit == 7


@pytest.mark.parametrize("engine", ["mujoco", "mjx"])
def test_a_nan_reward_term_never_poisons_the_policy(tmp_path, capsys, engine) -> None:
    """`log(x)` with x <= 0 on most steps: those envs are reset and counted per term, the update
    never sees a NaN, and every checkpointed parameter is finite."""
    import numpy as np

    from ksimdsl.runtime.training.checkpoint import latest_checkpoint, read_checkpoint

    shutil.copytree(REPO / "tasks" / "models", tmp_path / "models")
    text = CARTPOLE.read_text()
    assert "\nreward\n" in text
    task = tmp_path / "poisoned.ksim"
    task.write_text(text.replace("\nreward\n", '\nreward\n    poison 0.1 : log(joint_pos["slider"])\n', 1))
    run_dir = tmp_path / "run"
    args = [a for a in TINY if not a.startswith("engine=")]
    result = run_main(capsys, "train", task, *args, f"engine={engine}", "steps=3", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["nonfinite/poison"] for r in records) > 0
    assert all(r["nonfinite/balance"] == 0 for r in records)
    assert sum(r["nan_resets"] for r in records) >= sum(r["nonfinite/poison"] for r in records) > 0
    assert all(np.isfinite(r["reward"]) and np.isfinite(r["loss"]) for r in records)
    arrays, meta = read_checkpoint(latest_checkpoint(run_dir))  # refuses non-finite parameters
    assert meta.iteration == 3
    assert all(np.all(np.isfinite(a)) for name, a in arrays.items() if name.startswith("ppo") and a.dtype.kind == "f")
