"""`ksimdsl export`: the ONNX actor matches the JAX policy's deterministic action; bad input fails clearly."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from fixtures.cartpole import cartpole_task

from ksimdsl.errors import KsimError
from ksimdsl.runtime.rl import normalize as N
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.checkpoint import CheckpointMeta, save_checkpoint, spec_hash
from ksimdsl.runtime.tools.export import export_onnx, policy_to_onnx

ort = pytest.importorskip("onnxruntime")

BATCH = 16


def _spec_with_policy(**policy):
    spec, _, _ = cartpole_task()
    return dataclasses.replace(spec, policy=dataclasses.replace(spec.policy, **policy))


def _trained_looking_state(spec, seed: int, *, normalize: bool = True) -> ppo.PPOState:
    """A PPOState whose weights are O(1) (not the near-zero initial output layer) with non-trivial obs statistics."""
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(seed))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 100), 64))
    model = jax.tree.map(lambda x: _random_like(x, next(keys)) if _is_float_array(x) else x, state.model)
    stats = N.init(spec.obs_actor_size, enabled=normalize)
    obs_NO = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(seed + 200), (500, spec.obs_actor_size))
    return dataclasses.replace(state, model=model, obs_norm_actor=N.update(stats, obs_NO))


def _is_float_array(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)


def _random_like(x: jax.Array, key: jax.Array) -> jax.Array:
    """Weights (out, in) ~ N(0, 1/in), so activations and actions stay O(1); vectors ~ N(0, 0.3^2)."""
    scale = 1.0 / np.sqrt(x.shape[-1]) if x.ndim == 2 else 0.3
    return scale * jax.random.normal(key, x.shape, x.dtype)


def _onnx_actions(model: onnx.ModelProto, obs_NO: np.ndarray, carry=None):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"obs": obs_NO.astype(np.float32)}
    if carry is not None:
        feeds["carry"] = carry.astype(np.float32)
    return session.run(None, feeds)


def _observations(spec, seed: int, n: int = BATCH) -> np.ndarray:
    # wide spread, so some entries land beyond the normalizer's clip range
    return np.asarray(3.0 + 15.0 * jax.random.normal(jax.random.PRNGKey(seed), (n, spec.obs_actor_size)), np.float32)


@pytest.mark.parametrize(
    "policy",
    [
        {"kind": "mlp", "hidden": [32, 16], "dist": "normal", "activation": "elu"},
        {"kind": "mlp", "hidden": [24], "dist": "mixture", "mixtures": 4, "activation": "tanh"},
        {"kind": "mlp", "hidden": [16, 16], "dist": "normal", "activation": "gelu"},
        {"kind": "mlp", "hidden": [16], "dist": "mixture", "mixtures": 3, "activation": "silu"},
        {"kind": "mlp", "hidden": [16], "dist": "normal", "activation": "relu"},
    ],
    ids=["mlp-normal-elu", "mlp-mixture-tanh", "mlp-gelu", "mlp-mixture-silu", "mlp-relu"],
)
def test_mlp_actor_matches_jax_policy(policy):
    spec = _spec_with_policy(**policy)
    state = _trained_looking_state(spec, seed=1)
    pol = ppo.make_policy(state)
    obs_NO = _observations(spec, seed=2)
    carry = pol.initial_carry()
    expected_NA, _ = jax.vmap(lambda o: pol(o, carry))(jnp.asarray(obs_NO))
    (action_NA,) = _onnx_actions(policy_to_onnx(pol, spec), obs_NO)
    assert np.abs(expected_NA).max() > 0.1  # the comparison is not between two near-zero outputs
    np.testing.assert_allclose(action_NA, np.asarray(expected_NA), atol=1e-5, rtol=0)


def test_mixture_mode_picks_the_most_likely_component_per_row():
    spec = _spec_with_policy(kind="mlp", hidden=[16], dist="mixture", mixtures=4)
    state = _trained_looking_state(spec, seed=3)
    pol = ppo.make_policy(state)
    obs_NO = _observations(spec, seed=4, n=64)
    (action_NA,) = _onnx_actions(policy_to_onnx(pol, spec), obs_NO)
    dist = jax.vmap(lambda o: pol.actor(N.normalize(pol.obs_norm, o), pol.initial_carry())[0])(jnp.asarray(obs_NO))
    best_N = np.argmax(np.asarray(dist.logits_K), axis=1)
    assert len(set(best_N.tolist())) > 1  # several components win somewhere in the batch
    np.testing.assert_allclose(action_NA, np.asarray(dist.mean_KA)[np.arange(64), best_N], atol=1e-5)


@pytest.mark.parametrize("layers,dist", [(1, "normal"), (2, "mixture")])
def test_gru_actor_matches_jax_policy_over_a_sequence(layers, dist):
    spec = _spec_with_policy(kind="gru", hidden=[16, 8], layers=layers, dist=dist, mixtures=3)
    state = _trained_looking_state(spec, seed=5)
    pol = ppo.make_policy(state)
    model = policy_to_onnx(pol, spec)
    carry_onnx = np.zeros((BATCH, layers, 16), np.float32)
    carry_jax = jnp.broadcast_to(pol.initial_carry(), (BATCH, layers, 16))
    step = jax.jit(jax.vmap(pol))
    for t in range(4):  # the carry feeds back: errors would compound over steps
        obs_NO = _observations(spec, seed=10 + t)
        expected_NA, carry_jax = step(jnp.asarray(obs_NO), carry_jax)
        action_NA, carry_onnx = _onnx_actions(model, obs_NO, carry_onnx)
        np.testing.assert_allclose(action_NA, np.asarray(expected_NA), atol=1e-5, rtol=0)
        np.testing.assert_allclose(carry_onnx, np.asarray(carry_jax), atol=1e-5, rtol=0)
    assert np.abs(carry_onnx).max() > 0.1


def test_without_observation_statistics_the_graph_passes_observations_through():
    spec = _spec_with_policy(kind="mlp", hidden=[16], dist="normal")
    for normalize in (True, False):
        state = _trained_looking_state(spec, seed=6, normalize=normalize)
        if normalize:  # enabled but never updated: identity, as in normalize.normalize
            state = dataclasses.replace(state, obs_norm_actor=N.init(spec.obs_actor_size))
        pol = ppo.make_policy(state)
        model = policy_to_onnx(pol, spec)
        assert {n.op_type for n in model.graph.node}.isdisjoint({"Sub", "Div", "Clip"})
        assert dict((p.key, p.value) for p in model.metadata_props)["ksimdsl.normalization"] == "none"
        obs_NO = _observations(spec, seed=7)
        expected_NA, _ = jax.vmap(lambda o: pol(o, pol.initial_carry()))(jnp.asarray(obs_NO))
        (action_NA,) = _onnx_actions(model, obs_NO)
        np.testing.assert_allclose(action_NA, np.asarray(expected_NA), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- from a run directory


def _write_run(tmp_path, spec, state, name="run"):
    run_dir = tmp_path / name
    meta = CheckpointMeta(
        iteration=7, env_steps=700, wall_s=1.0, task=spec.task, spec_hash=spec_hash(spec), engine="mjx"
    )
    save_checkpoint(run_dir, {"ppo": state}, meta)
    return run_dir


def test_export_from_run_directory_writes_a_loadable_model_with_metadata(tmp_path):
    spec, _, _ = cartpole_task()
    state = _trained_looking_state(spec, seed=8)
    run_dir = _write_run(tmp_path, spec, state)
    out = export_onnx(spec, run_dir=run_dir, out_path=tmp_path / "out" / "policy.onnx")
    assert out == tmp_path / "out" / "policy.onnx" and out.is_file()

    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["ksimdsl.task"] == spec.task
    layout = json.loads(meta["ksimdsl.obs_layout"])
    assert [e["name"] for e in layout] == [e.name for e in spec.obs_actor]
    assert sum(e["size"] for e in layout) == spec.obs_actor_size
    assert int(meta["ksimdsl.action_size"]) == spec.action_size
    assert meta["ksimdsl.iteration"] == "7" and meta["ksimdsl.env_steps"] == "700"
    assert json.loads(meta["ksimdsl.recurrent"]) is False

    pol = ppo.make_policy(state)
    obs_NO = _observations(spec, seed=9)
    expected_NA, _ = jax.vmap(lambda o: pol(o, pol.initial_carry()))(jnp.asarray(obs_NO))
    (action_NA,) = _onnx_actions(model, obs_NO)
    np.testing.assert_allclose(action_NA, np.asarray(expected_NA), atol=1e-5, rtol=0)


def test_missing_run_directory_is_one_line_error(tmp_path):
    spec, _, _ = cartpole_task()
    with pytest.raises(KsimError, match="does not exist") as info:
        export_onnx(spec, run_dir=tmp_path / "nope", out_path=tmp_path / "p.onnx")
    assert "\n" not in str(info.value)


def test_foreign_directory_without_checkpoints_is_rejected(tmp_path):
    spec, _, _ = cartpole_task()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not a run")
    with pytest.raises(KsimError, match="no checkpoint"):
        export_onnx(spec, run_dir=tmp_path / "foreign", out_path=tmp_path / "p.onnx")


def test_checkpoint_of_another_task_is_rejected(tmp_path):
    spec, _, _ = cartpole_task()
    other = dataclasses.replace(spec, task="not_cartpole")
    run_dir = _write_run(tmp_path, other, ppo.init_ppo_from_spec(other, key=jax.random.PRNGKey(0)))
    with pytest.raises(KsimError, match="from task 'not_cartpole'"):
        export_onnx(spec, run_dir=run_dir, out_path=tmp_path / "p.onnx")
    assert not (tmp_path / "p.onnx").exists()


def test_unwritable_or_misnamed_output_fails_before_loading(tmp_path):
    spec, _, _ = cartpole_task()
    with pytest.raises(KsimError, match=r"must end in \.onnx"):
        export_onnx(spec, run_dir=tmp_path / "nope", out_path=tmp_path / "policy.pt")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(KsimError, match="is a directory"):
        export_onnx(spec, run_dir=tmp_path / "nope", out_path=tmp_path / "dir.onnx")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KsimError, match="cannot write"):
        export_onnx(spec, run_dir=tmp_path / "nope", out_path=blocker / "sub" / "p.onnx")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(KsimError, match="permission denied"):
            export_onnx(spec, run_dir=tmp_path / "nope", out_path=locked / "p.onnx")


def test_policy_loads_whatever_optimizer_settings_the_run_trained_with(tmp_path):
    spec, _, _ = cartpole_task()
    state = _trained_looking_state(spec, seed=11)
    run_dir = _write_run(tmp_path, spec, state)
    # `train` settings may differ between training and export (they are overridable);
    # adam <-> adamw: another optimizer-state layout
    flipped = "adamw" if spec.train.optimizer == "adam" else "adam"
    other = dataclasses.replace(spec, train=dataclasses.replace(spec.train, optimizer=flipped))
    assert jax.tree.structure(ppo.init_ppo_from_spec(other, key=jax.random.PRNGKey(0)).opt_state) != jax.tree.structure(
        state.opt_state
    )
    model = onnx.load(str(export_onnx(other, run_dir=run_dir, out_path=tmp_path / "p.onnx")))
    pol = ppo.make_policy(state)
    obs_NO = _observations(spec, seed=12)
    expected_NA, _ = jax.vmap(lambda o: pol(o, pol.initial_carry()))(jnp.asarray(obs_NO))
    np.testing.assert_allclose(_onnx_actions(model, obs_NO)[0], np.asarray(expected_NA), atol=1e-5, rtol=0)
