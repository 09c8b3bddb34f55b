"""Checkpoints: pytrees of arrays in safetensors, plus JSON metadata, written atomically.

A checkpoint is ONE file, `RUN_DIR/checkpoints/ckpt_<iteration:08d>.safetensors`:
every array leaf of the saved pytrees under a stable name (the tree's prefix
and `jax.tree_util.keystr` of the leaf's path, e.g. `ppo.params.actor.net.layers[0].weight`)
and, in the safetensors header metadata, a JSON `CheckpointMeta` with a SHA-256
of the array bytes. It is written to a temporary file in the same directory,
fsynced and `os.replace`d into place, so a kill at any moment leaves the
previous checkpoint intact. The newest `KEEP` checkpoints are kept.

Loading needs templates of the trees (freshly initialized state of the same
task): their structure gives the names, shapes and dtypes to expect. Anything
wrong with the file (missing, truncated, corrupt, another task, other shapes)
is a one-line KsimError. Nothing is ever unpickled.

Arrays under an attribute named in `TRANSIENT_FIELDS` (the AMP replay buffer,
`ksimdsl.runtime.rl.amp.Replay`: up to millions of transitions, and only a
sample of past rollouts) are not written; loading takes them from the
template, so a resumed run starts with an empty buffer and refills it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ksimdsl import __version__
from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError

__all__ = [
    "CheckpointMeta",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "latest_checkpoint",
    "checkpoint_of_iteration",
    "remove_temporary_files",
    "list_checkpoints",
    "spec_hash",
    "CHECKPOINT_DIR",
    "KEEP",
    "FORMAT",
    "TRANSIENT_FIELDS",
]

CHECKPOINT_DIR = "checkpoints"
KEEP = 3
FORMAT = 1
#: Largest checkpoint file read (the arrays of a big policy and 16k envs' state are far smaller).
MAX_BYTES = 4 << 30
#: Arrays whose values must be finite in every checkpoint: the PPO state (parameters, optimizer, normalizers).
PARAMETERS_PREFIX = "ppo"
_NAME = re.compile(r"^ckpt_(\d{8})\.safetensors$")

#: TaskSpec fields that may change between a checkpoint and its resume (training
#: settings, engine, documentation, the logged `metric`s); everything else must match.
_MUTABLE_SPEC_FIELDS = ("train", "engine", "doc", "source_file", "ops", "numba_args", "metrics")
#: physics settings that choose how MJX steps, not what is simulated (a run trained on MJX Warp
#: evaluates on MJX JAX; resuming its collector state needs the same implementation)
_MUTABLE_PHYSICS = ("impl", "naconmax", "njmax")
#: amp settings that may change too: the replay buffer is not saved, the regularizers only weigh the
#: discriminator's loss. (weight, gp and lr are hashed as they always were, so older runs keep their hash.)
_MUTABLE_AMP = ("replay", "logit_reg", "weight_decay")
#: Pytree attributes whose arrays are never saved: a load takes them from the template.
TRANSIENT_FIELDS = ("replay",)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself (stored as JSON in the safetensors header)."""

    iteration: int
    env_steps: int
    wall_s: float
    task: str
    spec_hash: str
    engine: str
    ksimdsl_version: str = __version__
    format: int = FORMAT
    sha256: str = ""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    meta: CheckpointMeta
    trees: Mapping[str, Any]


def spec_hash(spec: TaskSpec) -> str:
    """Hash of everything in the spec that decides what the saved arrays mean."""
    d = spec.to_dict()
    for name in _MUTABLE_SPEC_FIELDS:
        d.pop(name, None)
    for name in _MUTABLE_PHYSICS:
        d["physics"].pop(name, None)
    if d.get("amp"):
        for name in _MUTABLE_AMP:
            d["amp"]["settings"].pop(name, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _transient(key_path: tuple[Any, ...]) -> bool:
    """Whether a leaf lies under an attribute of `TRANSIENT_FIELDS`."""
    return any(isinstance(k, jax.tree_util.GetAttrKey) and k.name in TRANSIENT_FIELDS for k in key_path)


def _flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _transient(path):
            continue
        arr = leaf
        if isinstance(arr, jax.Array) and jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
            arr = jax.random.key_data(arr)
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(arr)
    return out


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint files of a run, oldest first."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    files = list_checkpoints(run_dir)
    return files[-1] if files else None


def checkpoint_of_iteration(run_dir: str | Path, iteration: int) -> Path:
    """The complete checkpoint written after `iteration`; KsimError listing the run's checkpoints if none."""
    files = list_checkpoints(run_dir)
    found = {int(m.group(1)): p for p in files if (m := _NAME.match(p.name))}
    if iteration in found:
        return found[iteration]
    have = ", ".join(map(str, sorted(found))) or "none"
    raise KsimError(f"{checkpoint_dir(run_dir)} has no checkpoint of iteration {iteration} (iterations: {have})")


def _non_finite(arrays: Mapping[str, np.ndarray], prefix: str) -> list[str]:
    """Names of the floating-point arrays under `prefix` that hold a NaN or an infinity."""
    return [
        name
        for name, a in sorted(arrays.items())
        if name.startswith(prefix) and np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a))
    ]


def _names_list(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def remove_temporary_files(run_dir: str | Path) -> int:
    """Delete the temporary files a killed checkpoint write leaves (`.ckpt-*.tmp`); returns how many."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return 0
    removed = 0
    for p in d.glob(".ckpt-*.tmp"):
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def save_checkpoint(run_dir: str | Path, trees: Mapping[str, Any], meta: CheckpointMeta, *, keep: int = KEEP) -> Path:
    """Write `trees` ({prefix: pytree}) atomically; drop all but the newest `keep` checkpoints.

    Refuses (KsimError) parameters that are not finite, and reports a write that fails (a full
    disk, a read-only directory) as a KsimError that leaves no partial file behind.
    """
    arrays: dict[str, np.ndarray] = {}
    for prefix, tree in trees.items():
        arrays.update(_flatten(prefix, tree))
    bad = _non_finite(arrays, PARAMETERS_PREFIX)
    if bad:
        raise KsimError(
            f"refusing to write checkpoint {meta.iteration}: the policy's parameters are not finite "
            f"({_names_list(bad)}); the last good checkpoint is kept"
        )
    meta = CheckpointMeta(**{**asdict(meta), "sha256": _digest(arrays)})
    payload = st_save(arrays, metadata={"ksimdsl": json.dumps(asdict(meta))})
    d = checkpoint_dir(run_dir)
    final = d / f"ckpt_{meta.iteration:08d}.safetensors"
    tmp: str | None = None
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=d)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise KsimError(f"cannot write checkpoint {final}: {exc.strerror or exc}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(d)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: Field name -> the JSON types its value may have in a checkpoint's metadata.
_META_TYPES: Mapping[str, tuple[type, ...]] = {
    "iteration": (int,),
    "env_steps": (int,),
    "wall_s": (int, float),
    "task": (str,),
    "spec_hash": (str,),
    "engine": (str,),
    "ksimdsl_version": (str,),
    "format": (int,),
    "sha256": (str,),
}


def _parse_meta(text: Any) -> CheckpointMeta:
    """The metadata JSON of a checkpoint, every field of the right type and in range (else ValueError)."""
    raw = json.loads(text)
    if not isinstance(raw, dict) or set(raw) != set(_META_TYPES):
        raise ValueError("metadata fields differ from a ksimdsl checkpoint's")
    for name, types in _META_TYPES.items():
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"metadata field '{name}' has the wrong type")
    if raw["iteration"] < 0 or raw["env_steps"] < 0 or not 0 <= raw["wall_s"] < float("inf"):
        raise ValueError("metadata iteration, env_steps or wall_s out of range")
    return CheckpointMeta(**raw)


def read_checkpoint(path: str | Path, *, max_bytes: int = MAX_BYTES) -> tuple[dict[str, np.ndarray], CheckpointMeta]:
    """Raw arrays and metadata of one checkpoint file, verified against its checksum.

    The file must be a regular file of at most `max_bytes` (a symlink to /dev/zero, a FIFO or a
    huge file is refused before anything is read), with valid metadata and finite parameters.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise KsimError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KsimError(f"checkpoint {path} is not a regular file")
    if info.st_size > max_bytes:
        raise KsimError(f"checkpoint {path} is {info.st_size:,} bytes, more than a checkpoint of this run can be")
    try:
        with open(path, "rb") as f:
            payload = f.read(max_bytes + 1)
    except OSError as exc:
        raise KsimError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if len(payload) > max_bytes:
        raise KsimError(f"checkpoint {path} grew past {max_bytes:,} bytes while being read")
    try:
        arrays = st_load(payload)
        header_len = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8 : 8 + header_len])
        meta = _parse_meta(header["__metadata__"]["ksimdsl"])
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise KsimError(f"checkpoint {path} is truncated or corrupt ({' '.join(str(exc).split())})") from None
    if meta.format != FORMAT:
        raise KsimError(f"checkpoint {path} has format {meta.format}; this ksimdsl reads format {FORMAT}")
    if _digest(arrays) != meta.sha256:
        raise KsimError(f"checkpoint {path} is corrupt (checksum mismatch)")
    bad = _non_finite(arrays, PARAMETERS_PREFIX)
    if bad:
        raise KsimError(f"checkpoint {path} holds non-finite parameters ({_names_list(bad)}); use an earlier one")
    return arrays, meta


def load_checkpoint(
    run_dir: str | Path,
    templates: Mapping[str, Any],
    *,
    spec: TaskSpec,
    path: str | Path | None = None,
) -> Checkpoint:
    """The newest checkpoint of `run_dir` (or `path`), restored into the structure of `templates`."""
    if path is None:
        if not Path(run_dir).is_dir():
            raise KsimError(f"run directory {run_dir} does not exist")
        path = latest_checkpoint(run_dir)
        if path is None:
            raise KsimError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    arrays, meta = read_checkpoint(path)
    if meta.task != spec.task:
        raise KsimError(f"checkpoint {path} is from task '{meta.task}', not '{spec.task}'")
    if meta.spec_hash != spec_hash(spec):
        raise KsimError(
            f"checkpoint {path} was written for a different version of task '{spec.task}' "
            "(observations, rewards, model or policy changed); start a new run"
        )
    trees = {}
    for prefix, template in templates.items():
        leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(template)
        leaves = []
        for key_path, leaf in leaves_with_path:
            if _transient(key_path):
                leaves.append(leaf)
                continue
            name = prefix + jax.tree_util.keystr(key_path)
            if name not in arrays:
                raise KsimError(
                    f"checkpoint {path} does not match this run: it has no array '{name}' "
                    "(did the engine, the physics impl, the optimizer or lr_schedule change?)"
                )
            arr = arrays[name]
            typed_key = isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
            want_shape = jax.random.key_data(leaf).shape if typed_key else np.shape(leaf)
            if tuple(arr.shape) != tuple(want_shape):
                raise KsimError(
                    f"checkpoint {path} does not match this run: '{name}' has shape {tuple(arr.shape)}, "
                    f"expected {tuple(want_shape)} (did num_envs, the policy size or the physics impl change?)"
                )
            if typed_key:
                leaves.append(jax.random.wrap_key_data(jnp.asarray(arr), impl=jax.random.key_impl(leaf)))
            elif isinstance(leaf, np.ndarray):
                # host-side state (the CPU engine) keeps its numpy dtype, float64 included
                leaves.append(np.asarray(arr, dtype=leaf.dtype))
            else:
                dtype = leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)
                leaves.append(jnp.asarray(arr, dtype=dtype))
        trees[prefix] = jax.tree_util.tree_unflatten(treedef, leaves)
    return Checkpoint(path=Path(path), meta=meta, trees=trees)
