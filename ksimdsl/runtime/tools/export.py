"""`ksimdsl export`: the deterministic actor of a run as a self-contained ONNX model.

    export_onnx(spec, run_dir="runs/walk/...", out_path="walk.onnx") -> Path

The graph is built node by node with the `onnx` package's helper API from the
equinox weights (no tracing, no torch). It computes exactly what
`ppo.Policy.__call__` computes without a key, for a batch of N observations:

    obs (N, O) --normalize--> z (N, O) --[GRU cells]--> dense layers --> head --> action (N, A)

* observation normalization is folded in as constants:
  `clip((obs - mean) / sqrt(var + eps), -CLIP, CLIP)` with the statistics of
  the checkpoint (`normalize.RunningStats`); nothing when normalization is off
  or has seen no data (identity, as in `normalize.normalize`);
* `normal` head: the action is the network's mean output; `mixture` head: the
  mean of the component with the largest logit (first one on ties, like
  `jnp.argmax`); std parameters are not exported;
* GRU actors take their carry as a second input `carry` (N, layers, H) and
  return the next carry as `carry_out`; pass zeros at the start of an episode.
* actions are raw: the runtime clips them to [-1, 1] before the actuators (see
  the `action_clip` metadata); the graph does not.

Metadata (`model.metadata_props`, all strings, JSON where structured):
`ksimdsl.task`, `ksimdsl.obs_layout` ([{name, size, offset}] of the actor
observation, plus `history` K for an observation of its last K values, newest
first), `ksimdsl.action_size`, `ksimdsl.actuators` (kind, action_scale,
default_pos, ...), `ksimdsl.policy`, `ksimdsl.recurrent`, `ksimdsl.carry_shape`,
`ksimdsl.action_clip`, `ksimdsl.ctrl_dt`, `ksimdsl.iteration`,
`ksimdsl.env_steps`, `ksimdsl.version`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ksimdsl import __version__
from ksimdsl.abi import TaskSpec
from ksimdsl.errors import InternalCompilerError, KsimError
from ksimdsl.runtime.rl import normalize as N
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.checkpoint import CheckpointMeta, checkpoint_of_iteration, load_checkpoint
from ksimdsl.runtime.rl.networks import MLP, ActorCritic, GRUActor, MLPActor

__all__ = ["export_onnx", "policy_to_onnx", "load_run_policy", "check_output_path", "OPSET", "IR_VERSION"]

#: ONNX operator set the graph uses (every op is in the default domain, opset 17).
OPSET = 17
#: IR version matching OPSET, so older runtimes load the file too.
IR_VERSION = 8

OBS_INPUT = "obs"
CARRY_INPUT = "carry"
ACTION_OUTPUT = "action"
CARRY_OUTPUT = "carry_out"


def load_run_policy(
    spec: TaskSpec, run_dir: str | Path, *, iteration: int | None = None
) -> tuple[ppo.Policy, CheckpointMeta]:
    """The policy of the newest checkpoint of `run_dir` (or of `iteration`'s) and that checkpoint's metadata.

    Raises a one-line KsimError for a missing or foreign run directory, a missing
    iteration or a checkpoint of another task (see `checkpoint.load_checkpoint`).
    """
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0))
    template = _PolicyArrays(model=state.model, obs_norm_actor=state.obs_norm_actor)
    path = None if iteration is None else checkpoint_of_iteration(run_dir, iteration)
    ckpt = load_checkpoint(run_dir, {"ppo": template}, spec=spec, path=path)
    arrays = ckpt.trees["ppo"]
    return ppo.Policy(actor=arrays.model.actor, obs_norm=arrays.obs_norm_actor), ckpt.meta


class _PolicyArrays(eqx.Module):
    """The part of a `ppo.PPOState` a policy needs, under the same field names.

    A checkpoint stores each array under its path in the PPOState, so loading
    into this smaller template reads exactly those arrays, whatever optimizer
    settings (and so optimizer-state layout) the run trained with.
    """

    model: ActorCritic
    obs_norm_actor: N.RunningStats


def check_output_path(out_path: str | Path, suffixes: tuple[str, ...]) -> Path:
    """`out_path` as a Path after checking its suffix and that its directory can be written.

    Done before any expensive work, so a typo fails in a second with one line.
    The directory is created if missing.
    """
    path = Path(out_path)
    if path.suffix.lower() not in suffixes:
        raise KsimError(f"output {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise KsimError(f"cannot write {path}: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KsimError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise KsimError(f"cannot write {path}: permission denied")
    return path


class _GraphBuilder:
    """Accumulates nodes and constant initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: Any, dtype: Any = np.float32) -> str:
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(
        self, op_type: str, inputs: list[str], stem: str | None = None, *, output: str | None = None, **attrs: Any
    ) -> str:
        out = output or self.fresh(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.fresh(f"node_{op_type}"), **attrs))
        return out

    # ---- layers

    def linear(self, x_NI: str, weight_OI: Any, bias_O: Any, stem: str) -> str:
        """x (N, I) -> x @ W^T + b (N, O), W as equinox stores it (O, I)."""
        w = self.const(f"{stem}_weight_T", np.asarray(weight_OI, np.float32).T)
        y = self.op("MatMul", [x_NI, w], f"{stem}_matmul")
        if bias_O is None:
            return y
        return self.op("Add", [y, self.const(f"{stem}_bias", np.asarray(bias_O, np.float32))], f"{stem}_out")

    def activation(self, x: str, kind: str) -> str:
        """The activations of `networks.ACTIVATIONS` with jax.nn's definitions."""
        if kind == "elu":
            return self.op("Elu", [x], "elu", alpha=1.0)
        if kind == "relu":
            return self.op("Relu", [x], "relu")
        if kind == "tanh":
            return self.op("Tanh", [x], "tanh")
        if kind == "silu":  # x * sigmoid(x)
            return self.op("Mul", [x, self.op("Sigmoid", [x], "sigmoid")], "silu")
        if kind == "gelu":  # jax.nn.gelu(approximate=True): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = self.op("Mul", [x, self.op("Mul", [x, x], "sq")], "cube")
            inner = self.op("Add", [x, self.op("Mul", [cube, self.const("c", 0.044715)])], "inner")
            t = self.op("Tanh", [self.op("Mul", [inner, self.const("c", np.sqrt(2.0 / np.pi))])], "tanh")
            half_x = self.op("Mul", [x, self.const("half", 0.5)], "half_x")
            return self.op("Mul", [half_x, self.op("Add", [t, self.const("one", 1.0)])], "gelu")
        raise InternalCompilerError(f"no ONNX export for activation {kind!r}")

    def mlp_hidden(self, x: str, mlp: MLP, stem: str) -> str:
        """All layers of `mlp` except the last, each followed by the activation."""
        for i, layer in enumerate(mlp.layers[:-1]):
            x = self.activation(self.linear(x, layer.weight, layer.bias, f"{stem}{i}"), mlp.activation)
        return x

    def gru_cell(self, x_NI: str, h_NH: str, cell: Any, stem: str) -> str:
        """equinox.nn.GRUCell on a batch: gates in the order (reset, update, new)."""
        hidden = cell.hidden_size
        w_ih = np.asarray(cell.weight_ih, np.float32)  # (3H, I)
        w_hh = np.asarray(cell.weight_hh, np.float32)  # (3H, H)
        bias = np.asarray(cell.bias, np.float32) if cell.use_bias else np.zeros(3 * hidden, np.float32)
        bias_n = np.asarray(cell.bias_n, np.float32) if cell.use_bias else np.zeros(hidden, np.float32)
        gate = [slice(0, hidden), slice(hidden, 2 * hidden), slice(2 * hidden, 3 * hidden)]
        i_r, i_z, i_n = (self.linear(x_NI, w_ih[g], bias[g], f"{stem}_ih{k}") for k, g in zip("rzn", gate))
        h_r, h_z, h_n = (self.linear(h_NH, w_hh[g], None, f"{stem}_hh{k}") for k, g in zip("rzn", gate))
        reset = self.op("Sigmoid", [self.op("Add", [i_r, h_r])], f"{stem}_reset")
        update = self.op("Sigmoid", [self.op("Add", [i_z, h_z])], f"{stem}_update")
        h_n_b = self.op("Add", [h_n, self.const(f"{stem}_bias_n", bias_n)])
        new = self.op("Tanh", [self.op("Add", [i_n, self.op("Mul", [reset, h_n_b])])], f"{stem}_new")
        # h' = new + update * (h - new)
        return self.op("Add", [new, self.op("Mul", [update, self.op("Sub", [h_NH, new])])], f"{stem}_h")


def _normalize_constants(stats: N.RunningStats) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean_O, std_O) float32 exactly as `normalize.normalize` computes them, or None for the identity."""
    if not stats.enabled or float(stats.count) <= 0:
        return None
    std_O = jnp.sqrt(N.variance(stats) + N.EPS)
    return np.asarray(stats.mean_O, np.float32), np.asarray(std_O, np.float32)


def _head_mode(g: _GraphBuilder, x: str, mlp: MLP, head: Any) -> str:
    """The deterministic action (N, A) from the last hidden activation `x` of the actor's MLP."""
    last = mlp.layers[-1]
    weight, bias = np.asarray(last.weight, np.float32), np.asarray(last.bias, np.float32)
    a = head.action_size
    if head.kind == "normal":
        return g.linear(x, weight, bias, "mean")
    k = head.mixtures
    # Only the logit and mean rows of the output layer matter for the mode.
    logits_NK = g.linear(x, weight[:k], bias[:k], "logits")
    means = g.linear(x, weight[k : k + k * a], bias[k : k + k * a], "means")
    means_NKA = g.op("Reshape", [means, g.const("shape_KA", [0, k, a], np.int64)], "means_NKA")
    best_N1 = g.op("ArgMax", [logits_NK], "best", axis=1, keepdims=1, select_last_index=0)
    best_N11 = g.op("Unsqueeze", [best_N1, g.const("axis2", [2], np.int64)], "best_N11")
    index_N1A = g.op("Expand", [best_N11, g.const("shape_1A", [1, 1, a], np.int64)], "best_N1A")
    chosen_N1A = g.op("GatherElements", [means_NKA, index_N1A], "chosen", axis=1)
    return g.op("Squeeze", [chosen_N1A, g.const("axis1", [1], np.int64)], "mode")


def policy_to_onnx(policy: ppo.Policy, spec: TaskSpec, *, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Build the ONNX model of `policy` (see the module docstring); checked with `onnx.checker`."""
    actor = policy.actor
    obs_size, action_size = spec.obs_actor_size, spec.action_size
    g = _GraphBuilder()
    x = OBS_INPUT
    norm = _normalize_constants(policy.obs_norm)
    if norm is not None:
        mean_O, std_O = norm
        z = g.op("Div", [g.op("Sub", [x, g.const("obs_mean", mean_O)], "centred"), g.const("obs_std", std_O)], "z")
        x = g.op("Clip", [z, g.const("clip_lo", -N.CLIP), g.const("clip_hi", N.CLIP)], "obs_normalized")

    inputs = [helper.make_tensor_value_info(OBS_INPUT, TensorProto.FLOAT, ["batch", obs_size])]
    outputs = [helper.make_tensor_value_info(ACTION_OUTPUT, TensorProto.FLOAT, ["batch", action_size])]
    if isinstance(actor, GRUActor):
        layers, hidden = len(actor.cells), actor.cells[0].hidden_size
        inputs.append(helper.make_tensor_value_info(CARRY_INPUT, TensorProto.FLOAT, ["batch", layers, hidden]))
        outputs.append(helper.make_tensor_value_info(CARRY_OUTPUT, TensorProto.FLOAT, ["batch", layers, hidden]))
        new_carry = []
        for i, cell in enumerate(actor.cells):
            h = g.op("Gather", [CARRY_INPUT, g.const(f"layer{i}", i, np.int64)], f"carry{i}", axis=1)
            x = g.gru_cell(x, h, cell, f"gru{i}")
            new_carry.append(g.op("Unsqueeze", [x, g.const("axis1", [1], np.int64)], f"carry_out{i}"))
        if len(new_carry) == 1:
            g.op("Identity", new_carry, output=CARRY_OUTPUT)
        else:
            g.op("Concat", new_carry, output=CARRY_OUTPUT, axis=1)
    elif not isinstance(actor, MLPActor):
        raise InternalCompilerError(f"no ONNX export for actor {type(actor).__name__}")

    x = g.mlp_hidden(x, actor.net, "dense")
    g.op("Identity", [_head_mode(g, x, actor.net, actor.head)], output=ACTION_OUTPUT)

    graph = helper.make_graph(g.nodes, f"ksimdsl_{spec.task}_actor", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ksimdsl",
        producer_version=__version__,
        doc_string=f"Deterministic actor of ksimdsl task '{spec.task}': {spec.doc}".strip(),
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, _metadata(policy, spec) | dict(metadata or {}))
    onnx.checker.check_model(model, full_check=True)
    return model


def _metadata(policy: ppo.Policy, spec: TaskSpec) -> dict[str, str]:
    actor = policy.actor
    recurrent = isinstance(actor, GRUActor)
    carry = list(actor.initial_carry().shape)
    layout = [e.to_dict() for e in spec.obs_actor]
    internal = ("joint_qpos_adr", "joint_dof_adr")  # model addresses, meaningless outside ksimdsl
    actuators = {k: v for k, v in spec.to_dict()["actuators"].items() if k not in internal}
    return {
        "ksimdsl.version": __version__,
        "ksimdsl.task": spec.task,
        "ksimdsl.obs_layout": json.dumps(layout),
        "ksimdsl.obs_size": str(spec.obs_actor_size),
        "ksimdsl.action_size": str(spec.action_size),
        "ksimdsl.actuators": json.dumps(actuators),
        "ksimdsl.policy": json.dumps(spec.to_dict()["policy"]),
        "ksimdsl.recurrent": json.dumps(recurrent),
        "ksimdsl.carry_shape": json.dumps(carry),
        "ksimdsl.action_clip": json.dumps([-1.0, 1.0]),
        "ksimdsl.ctrl_dt": str(float(spec.physics.ctrl_dt)),
        "ksimdsl.normalization": "folded" if _normalize_constants(policy.obs_norm) is not None else "none",
    }


def export_onnx(spec: TaskSpec, *, run_dir: str | Path, out_path: str | Path) -> Path:
    """Write the deterministic actor of `run_dir`'s newest checkpoint to `out_path` (.onnx); returns the path."""
    path = check_output_path(out_path, (".onnx",))
    policy, meta = load_run_policy(spec, run_dir)
    model = policy_to_onnx(
        policy, spec, metadata={"ksimdsl.iteration": str(meta.iteration), "ksimdsl.env_steps": str(meta.env_steps)}
    )
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(model.SerializeToString())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KsimError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
