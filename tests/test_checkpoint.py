"""Checkpoints: exact round trips, atomic replacement, retention, and one-line errors for bad files."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixtures.cartpole import cartpole_task

from ksimdsl.errors import KsimError
from ksimdsl.runtime.training.checkpoint import (
    CheckpointMeta,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    spec_hash,
)


@pytest.fixture(scope="module")
def spec():
    return cartpole_task().spec


def make_tree(seed: int = 0, envs: int = 4):
    rng = np.random.default_rng(seed)
    return {
        "weights": [jnp.asarray(rng.normal(size=(3, 5)), jnp.float32), jnp.asarray(rng.normal(size=5), jnp.float32)],
        "step": jnp.asarray(seed, jnp.int32),
        "done_E": jnp.asarray(rng.random(envs) > 0.5),
        "empty": jnp.zeros((envs, 0), jnp.float32),
        "key": jax.random.PRNGKey(seed),
    }


def meta_for(spec, iteration: int) -> CheckpointMeta:
    return CheckpointMeta(
        iteration=iteration, env_steps=iteration * 100, wall_s=1.5 * iteration, task=spec.task,
        spec_hash=spec_hash(spec), engine="mjx",
    )


def test_round_trip_is_exact(tmp_path, spec):
    tree = make_tree(1)
    save_checkpoint(tmp_path, {"state": tree}, meta_for(spec, 7))
    ckpt = load_checkpoint(tmp_path, {"state": make_tree(2)}, spec=spec)
    assert ckpt.meta.iteration == 7 and ckpt.meta.env_steps == 700 and ckpt.meta.wall_s == 10.5
    restored = ckpt.trees["state"]
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_latest_wins_and_only_the_last_three_are_kept(tmp_path, spec):
    for it in (1, 2, 3, 4, 5):
        save_checkpoint(tmp_path, {"state": make_tree(it)}, meta_for(spec, it))
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt_00000003.safetensors", "ckpt_00000004.safetensors", "ckpt_00000005.safetensors"]
    assert latest_checkpoint(tmp_path).name == "ckpt_00000005.safetensors"
    ckpt = load_checkpoint(tmp_path, {"state": make_tree(0)}, spec=spec)
    assert int(ckpt.trees["state"]["step"]) == 5
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_a_leftover_temporary_file_does_not_hide_the_last_complete_checkpoint(tmp_path, spec):
    save_checkpoint(tmp_path, {"state": make_tree(3)}, meta_for(spec, 3))
    # a kill in the middle of the next write leaves a partial temp file behind
    (tmp_path / "checkpoints" / ".ckpt-abc.tmp").write_bytes(b"\x00" * 10)
    ckpt = load_checkpoint(tmp_path, {"state": make_tree(0)}, spec=spec)
    assert ckpt.meta.iteration == 3


def test_truncated_checkpoint_is_a_one_line_user_error(tmp_path, spec):
    path = save_checkpoint(tmp_path, {"state": make_tree(1)}, meta_for(spec, 1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(KsimError, match="truncated or corrupt") as err:
        load_checkpoint(tmp_path, {"state": make_tree(0)}, spec=spec)
    assert "\n" not in str(err.value)


def test_flipped_bytes_fail_the_checksum(tmp_path, spec):
    path = save_checkpoint(tmp_path, {"state": make_tree(1)}, meta_for(spec, 1))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last array's bytes: the header still parses
    path.write_bytes(bytes(data))
    with pytest.raises(KsimError, match="corrupt"):
        read_checkpoint(path)


def test_garbage_and_missing_files_are_user_errors(tmp_path, spec):
    with pytest.raises(KsimError, match="does not exist"):
        load_checkpoint(tmp_path / "nope", {"state": make_tree(0)}, spec=spec)
    with pytest.raises(KsimError, match="no checkpoint"):
        load_checkpoint(tmp_path, {"state": make_tree(0)}, spec=spec)
    bad = tmp_path / "checkpoints" / "ckpt_00000001.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(64))
    with pytest.raises(KsimError, match="truncated or corrupt"):
        load_checkpoint(tmp_path, {"state": make_tree(0)}, spec=spec)


def test_checkpoint_of_another_task_or_task_version_is_refused(tmp_path, spec):
    save_checkpoint(tmp_path, {"state": make_tree(1)}, meta_for(spec, 1))
    other = dataclasses.replace(spec, task="walk")
    with pytest.raises(KsimError, match="from task 'cartpole', not 'walk'"):
        load_checkpoint(tmp_path, {"state": make_tree(0)}, spec=other)
    changed = dataclasses.replace(spec, rewards=spec.rewards + ("extra",))
    with pytest.raises(KsimError, match="different version of task"):
        load_checkpoint(tmp_path, {"state": make_tree(0)}, spec=changed)
    # training settings may change between sessions
    more_steps = dataclasses.replace(spec, train=dataclasses.replace(spec.train, steps=999))
    assert load_checkpoint(tmp_path, {"state": make_tree(0)}, spec=more_steps).meta.iteration == 1


def test_mismatched_shapes_name_the_array(tmp_path, spec):
    save_checkpoint(tmp_path, {"state": make_tree(1, envs=4)}, meta_for(spec, 1))
    with pytest.raises(KsimError, match=r"'state\['done_E'\]' has shape \(4,\), expected \(8,\)"):
        load_checkpoint(tmp_path, {"state": make_tree(0, envs=8)}, spec=spec)
    with pytest.raises(KsimError, match="has no array"):
        load_checkpoint(tmp_path, {"state": {**make_tree(0), "new": jnp.zeros(2)}}, spec=spec)


# --------------------------------------------------------------------------- hostile files and faults (issue 18)


def test_non_finite_parameters_are_never_written(tmp_path, spec):
    save_checkpoint(tmp_path, {"ppo": make_tree(1)}, meta_for(spec, 1))
    poisoned = make_tree(2)
    poisoned["weights"][0] = poisoned["weights"][0].at[1, 2].set(jnp.nan)
    with pytest.raises(KsimError, match=r"parameters are not finite \(ppo\['weights'\]\[0\]\)"):
        save_checkpoint(tmp_path, {"ppo": poisoned}, meta_for(spec, 2))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_00000001.safetensors"]
    assert not list((tmp_path / "checkpoints").glob(".ckpt-*"))
    # the collector's state is data, not parameters: a NaN observation there is kept as it is
    save_checkpoint(tmp_path, {"ppo": make_tree(3), "collector": {"obs": jnp.full(3, jnp.nan)}}, meta_for(spec, 3))


def _rewrite_meta(path, **changes) -> None:
    """Change metadata fields of a checkpoint file in place, keeping its (array) checksum valid."""
    import json
    import struct

    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["ksimdsl"])
    meta.update(changes)
    header["__metadata__"]["ksimdsl"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


@pytest.mark.parametrize(
    "changes",
    [{"iteration": "seven"}, {"iteration": -1}, {"wall_s": None}, {"env_steps": True}, {"task": 3}, {"extra": 1}],
    ids=["iteration-str", "iteration-negative", "wall-null", "steps-bool", "task-int", "unknown-field"],
)
def test_tampered_metadata_is_a_one_line_error(tmp_path, spec, changes):
    path = save_checkpoint(tmp_path, {"state": make_tree(1)}, meta_for(spec, 4))
    _rewrite_meta(path, **changes)
    with pytest.raises(KsimError, match="truncated or corrupt"):
        load_checkpoint(tmp_path, {"state": make_tree(2)}, spec=spec)


def test_checkpoint_symlinked_to_a_device_is_refused_before_reading(tmp_path, spec):
    path = save_checkpoint(tmp_path, {"state": make_tree(1)}, meta_for(spec, 5))
    path.unlink()
    os.symlink("/dev/zero", path)
    with pytest.raises(KsimError, match="not a regular file"):
        load_checkpoint(tmp_path, {"state": make_tree(2)}, spec=spec)


def test_oversized_checkpoint_is_refused_before_reading(tmp_path, spec):
    path = save_checkpoint(tmp_path, {"state": make_tree(1)}, meta_for(spec, 6))
    with pytest.raises(KsimError, match="more than a checkpoint"):
        read_checkpoint(path, max_bytes=64)


def test_failed_write_is_a_user_error_and_leaves_no_partial_file(tmp_path, spec):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    ckpt_dir.chmod(0o500)  # read-only (root ignores modes: then make the directory a file instead)
    try:
        if os.access(ckpt_dir, os.W_OK):
            ckpt_dir.chmod(0o700)
            ckpt_dir.rmdir()
            ckpt_dir.write_text("not a directory")
        with pytest.raises(KsimError, match="cannot write checkpoint"):
            save_checkpoint(tmp_path, {"state": make_tree(1)}, meta_for(spec, 1))
    finally:
        if ckpt_dir.is_dir():
            ckpt_dir.chmod(0o700)
    if ckpt_dir.is_dir():
        assert list(ckpt_dir.iterdir()) == []


def test_temporary_files_of_a_killed_write_are_removed(tmp_path, spec):
    from ksimdsl.runtime.training.checkpoint import remove_temporary_files

    save_checkpoint(tmp_path, {"state": make_tree(1)}, meta_for(spec, 1))
    (tmp_path / "checkpoints" / ".ckpt-abc123.tmp").write_bytes(b"partial")
    assert remove_temporary_files(tmp_path) == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["ckpt_00000001.safetensors"]
