"""The settings schema (ksimdsl/settings) is the one description of every setting.

Its views (the checker's tables, abi defaults, the docs' tables, the network
activations) agree with it; SPEC dicts round-trip through the typed TaskSpec;
what depends on the machine (memory) is refused before a run directory exists.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from fixtures.cartpole_kernel import SPEC as CARTPOLE_SPEC
from ksimdsl import abi
from ksimdsl import settings as S
from ksimdsl.codegen import compile_task
from ksimdsl.errors import KsimError
from ksimdsl.frontend import builtins as bi

REPO = Path(__file__).resolve().parents[1]
SECTIONS = (
    S.PhysicsSettings, S.TrainSettings, S.PolicySettings, S.CurriculumSettings, S.CommandSettings, S.ActuatorSettings,
    S.AmpSettings,
)  # fmt: skip


def _docs_tables() -> dict[str, str]:
    text = (REPO / "docs" / "language.md").read_text()
    found = re.findall(r"<!-- settings:([a-z_ ]+) \(generated[^>]*-->\n(.*?)\n<!-- /settings -->", text, re.S)
    return dict(found)


def test_docs_tables_are_the_schema():
    expected = {
        "physics": S.PhysicsSettings.file_table(),
        "train": S.TrainSettings.file_table(),
        "policy": S.PolicySettings.file_table(),
        "amp": S.AmpSettings.file_table(),
        "command": S.CommandSettings.file_table(),
        **{f"curriculum {k}": S.CurriculumSettings.kind_table(k) for k in S.CURRICULUM_KINDS},
        **{f"actuators {k}": S.ActuatorSettings.kind_table(k) for k in S.ACTUATOR_KINDS if k != "ctrl"},
    }
    tables = _docs_tables()
    assert set(tables) == set(expected)
    for name, table in expected.items():
        assert tables[name] == S.docs_table(table), f"docs/language.md table '{name}' is out of date"


def test_every_setting_is_documented_and_its_default_is_valid():
    for cls in SECTIONS:
        cls()  # the defaults pass every rule
        for s in cls.by_name().values():
            assert s.doc, f"{cls.__name__}.{s.name} has no doc"
            assert S.value_problem(s, s.default) is None


def test_the_views_are_derived_from_the_schema():
    assert abi.ENGINES is S.ENGINES and bi.ENGINES is S.ENGINES
    assert dict(abi.DEFAULT_TRAIN) == S.TrainSettings().to_dict()
    assert dict(abi.DEFAULT_PHYSICS) == {k: v for k, v in S.PhysicsSettings().to_dict().items() if k != "substeps"}
    assert list(bi.TRAIN_SETTINGS) == list(S.TrainSettings.table())
    assert set(bi.POLICY_SETTINGS) == set(S.PolicySettings.table()) - {"kind", "mixtures"}
    assert bi.POLICY_KINDS == ("mlp", "gru")
    assert dict(bi.CURRICULUM_DEFAULTS["linear"]) == {"step": 0.01, "every": 100}
    assert bi.ACTUATOR_KINDS.keys() == set(S.ACTUATOR_KINDS) and not bi.ACTUATOR_KINDS["ctrl"]
    assert dict(bi.ACTUATOR_KINDS["velocity"]) == {"kd": None, "action_scale": 1.0}  # None: required
    pv = {"kp": None, "kd": 0.0, "action_scale": 1.0, "velocity_scale": 1.0}
    assert dict(bi.ACTUATOR_KINDS["position_velocity"]) == pv
    pytest.importorskip("jax")
    from ksimdsl.runtime.rl.networks import ACTIVATIONS

    assert set(ACTIVATIONS) == set(S.PolicySettings.by_name()["activation"].choices)


def test_replace_validates_and_converts():
    train = S.TrainSettings()
    with pytest.raises(KsimError, match="num_envs=7 must be a multiple of minibatches=4"):
        dataclasses.replace(train, num_envs=7)
    with pytest.raises(KsimError, match="train setting 'lr' must be finite, got inf"):
        dataclasses.replace(train, lr=float("inf"))
    with pytest.raises(KsimError, match=r"ctrl_dt \(7ms\) must be a whole multiple of dt \(5ms\)"):
        S.PhysicsSettings(dt=0.005, ctrl_dt=0.007)
    policy = S.PolicySettings(hidden=[32, 16], activation="swish")
    assert policy.hidden == (32, 16) and policy.activation == "silu" and hash(policy)
    assert S.TrainSettings(lr=1).lr == 1.0 and isinstance(S.TrainSettings(lr=1).lr, float)


def test_stored_settings_are_validated_when_read():
    bad = dict(CARTPOLE_SPEC, train=dict(CARTPOLE_SPEC["train"], lr=-1.0, num_envs="many"))
    with pytest.raises(KsimError) as err:
        abi.TaskSpec.from_dict(bad)
    text = str(err.value)
    assert "train setting 'lr' must be positive, got -1" in text and "must be a whole number, got 'many'" in text
    with pytest.raises(KsimError, match="unknown train setting 'lrr'"):
        S.TrainSettings.from_dict({"lrr": 1e-3})
    with pytest.raises(KsimError, match="unknown engine 'jax'"):
        abi.TaskSpec.from_dict(dict(CARTPOLE_SPEC, engine="jax"))


@pytest.mark.parametrize("task", ["cartpole", "walk"])
@pytest.mark.parametrize("backend", ["jax", "numba"])
def test_spec_has_one_format(task, backend):
    """The generated SPEC, TaskSpec.from_dict and TaskSpec.to_dict agree exactly."""
    spec = compile_task(str(REPO / "tasks" / f"{task}.ksim"), backend=backend).spec
    typed = abi.TaskSpec.from_dict(spec)
    assert typed.to_dict() == spec
    assert abi.TaskSpec.from_dict(typed.to_dict()) == typed


def test_memory_estimate_is_checked_before_the_run_directory_exists(tmp_path, monkeypatch):
    pytest.importorskip("jax")
    from ksimdsl.runtime.training.train import RunPlan, train

    spec = abi.TaskSpec.from_dict(CARTPOLE_SPEC)
    problem = S.memory_problem(spec.train, obs_actor_size=5, obs_critic_size=5, action_size=1, available=2**16)
    assert problem is not None and "lower num_envs or rollout" in problem.text
    assert S.memory_problem(spec.train, obs_actor_size=5, obs_critic_size=5, action_size=1, available=2**40) is None
    monkeypatch.setattr(S, "machine_memory_bytes", lambda: 2**16)
    with pytest.raises(KsimError, match=r"train: num_envs=64 x rollout=32 needs at least .* MiB .* this machine has"):
        train(spec, None, model_path="unused.xml", plan=RunPlan(tmp_path / "run", progress=False))
    assert not (tmp_path / "run").exists()
