"""What MJX's Warp implementation (`physics impl=warp`) supports, as far as the checker and the runtime must know.

MuJoCo Warp steps all envs of a batch as "worlds" of one model. A model field
can differ between envs (a task's `randomize` statement draws it per env) only
where Warp keeps it per world; every other field is shared by all worlds, and a
per-env value of it would be silently ignored. `WARP_PER_ENV_FIELDS` lists the
MjModel fields Warp keeps per world (mujoco-mjx 3.17's `_BATCH_DIM["Model"]`,
without the `opt` fields; tests/test_mjx_warp.py checks them against the
installed MJX). The checker reports a task file that sets `physics impl=warp`
and randomizes another field at the field; the runtime checks the same for an
`impl=warp` given on the command line.

Pure Python: the frontend imports it.
"""

from __future__ import annotations

__all__ = ["WARP_PER_ENV_FIELDS", "warp_field_problem"]

WARP_PER_ENV_FIELDS: frozenset[str] = frozenset(
    """
    actuator_acc0 actuator_actrange actuator_biasprm actuator_cranklength actuator_ctrlrange
    actuator_delay actuator_dynprm actuator_forcerange actuator_gainprm actuator_gear
    actuator_history actuator_historyadr actuator_lengthrange
    body_gravcomp body_inertia body_invweight0 body_ipos body_iquat body_mass body_pos body_quat
    body_subtreemass
    cam_fovy cam_intrinsic cam_mat0 cam_pos cam_pos0 cam_poscom0 cam_quat
    dof_armature dof_damping dof_dampingpoly dof_frictionloss dof_invweight0 dof_solimp dof_solref
    eq_data eq_solimp eq_solref
    geom_aabb geom_adhesion geom_dataid geom_friction geom_gap geom_margin geom_matid geom_pos
    geom_quat geom_rbound geom_rgba geom_size geom_solimp geom_solmix geom_solref geom_surfacevel
    jnt_actfrcrange jnt_axis jnt_margin jnt_pos jnt_range jnt_solimp jnt_solref jnt_stiffness
    jnt_stiffnesspoly
    light_active light_ambient light_attenuation light_castshadow light_cutoff light_diffuse
    light_dir light_dir0 light_exponent light_pos light_pos0 light_poscom0 light_specular light_type
    mat_emission mat_rgba mat_shininess mat_specular mat_texid mat_texrepeat mat_texuniform
    pair_adhesion pair_friction pair_gap pair_margin pair_solimp pair_solref pair_solreffriction
    qpos0
    qpos_spring
    sensor_delay sensor_history sensor_historyadr sensor_interval
    site_pos site_quat
    tendon_actfrcrange tendon_armature tendon_damping tendon_dampingpoly tendon_frictionloss
    tendon_invweight0 tendon_length0 tendon_lengthspring tendon_margin tendon_range
    tendon_solimp_fri tendon_solimp_lim tendon_solref_fri tendon_solref_lim tendon_stiffness
    tendon_stiffnesspoly
    """.split()
)


def warp_field_problem(field: str) -> str | None:
    """Why `randomize FIELD` cannot run on MuJoCo Warp, or None when it can."""
    if field in WARP_PER_ENV_FIELDS:
        return None
    return (
        f"MuJoCo Warp cannot randomize model field '{field}' per environment "
        "(it keeps that field shared by all environments); use impl=jax"
    )
