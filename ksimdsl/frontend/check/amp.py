"""The `amp` block (adversarial motion prior, docs/motions.md "AMP"): settings and transition features.

Each feature is an ordinary expression whose value must be computable from a clip frame's qpos and
qvel alone (`bi.AMP_QUANTITIES`, optionally selected: `base_pos.z`, `joint_pos["*knee*"]`); it becomes
a piece of `ksimdsl.model.amp_features`, which the runtime evaluates on the simulated state and which
is evaluated here on the reference clip, resampled at the control period.
"""

from __future__ import annotations

import numpy as np

from ksimdsl import settings as S
from ksimdsl.errors import Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Ctx, Part, Reported
from ksimdsl.model.amp_features import features as eval_features
from ksimdsl.model.amp_features import resample_clip

_EXAMPLE = "features = [joint_pos, joint_vel, base_pos.z, local_lin_vel, local_ang_vel]"
_ALLOWED = ", ".join(bi.AMP_QUANTITIES)


class AmpChecker(Part):
    """`amp ...`: the discriminator's settings and the feature pieces, with the reference's features."""

    def amp(self, stmt: ast.Statement | None) -> t.AmpDef | None:
        if stmt is None:
            return None
        assert isinstance(stmt, ast.AmpStmt)
        refs = self.cx.reference
        if refs.stmt is None:
            self.fail(
                stmt.keyword_span,
                "`amp` learns the style of the reference motion, but the task has no `reference` statement",
                'add one, e.g. `reference "clips/walk.npz"` (docs/motions.md)',
            )
        features = [s for s in stmt.settings if s.key == "features"]
        others = [s for s in stmt.settings if s.key != "features"]
        vals = self.cx.settings.validate(others, {**bi.AMP_SETTINGS, "features": None}, "amp")
        values = {bi.AMP_SETTINGS[k].name: v for k, (v, _) in vals.items()}
        settings = self.attempt(self.cx.settings.section, S.AmpSettings, values, vals, stmt.span, "amp")
        if not features:
            self.fail(stmt.keyword_span, f"`amp` needs a `features = [...]` line, e.g. `{_EXAMPLE}`")
        for dup in features[1:]:
            self.cx.sink.error(dup.key_span, "duplicate amp setting 'features'")
        items = features[0].value.items if isinstance(features[0].value, ast.Vector) else (features[0].value,)
        pieces: list[dict] = []
        names: list[str] = []
        for item in items:
            piece = self.attempt(self.feature, item)
            if piece is not None:
                pieces.append(piece)
                names.append(self.text(item.span))
        if settings is None or refs.failed or refs.clip is None or len(pieces) != len(items):
            raise Reported
        if not pieces:
            self.fail(features[0].value.span, f"`amp` needs at least one feature, e.g. `{_EXAMPLE}`")
        clip = refs.clip
        qpos, qvel = resample_clip(clip.qpos_FQ, clip.qvel_FV, clip.fps, self.cx.ctrl_dt, clip.quat_adr)
        reference = np.asarray(eval_features(pieces, qpos, qvel), np.float32)
        if not np.all(np.isfinite(reference)):
            self.fail(features[0].value.span, "the amp features of the reference clip are not all finite")
        return t.AmpDef(settings, tuple(pieces), tuple(names), reference, stmt.span)

    def text(self, span: Span) -> str:
        lines = self.cx.source.text.splitlines()
        if span.line != span.end_line:
            return lines[span.line - 1][span.col - 1 :].strip()
        return lines[span.line - 1][span.col - 1 : span.end_col - 1]

    def feature(self, item: ast.Expr) -> dict:
        """One feature: a piece of `ksimdsl.model.amp_features` (or an error at the item)."""
        value = self.cx.exprs.float_expr(item, Ctx("amp feature"))
        piece = self.piece(value)
        if piece is None:
            self.fail(
                item.span,
                f"amp feature '{self.text(item.span)}' cannot be computed from the reference clip's qpos and qvel",
                f"an amp feature is one of {_ALLOWED}, or a selection of one (base_pos.z, joint_pos[\"*knee*\"])",
            )
        return piece

    def piece(self, e: t.Expr) -> dict | None:
        """The piece computing `e`, or None when `e` needs more than qpos and qvel."""
        if isinstance(e, t.Quantity):
            return self.piece(e.value) if e.name in bi.AMP_QUANTITIES and e.arg is None else None
        if isinstance(e, t.Let):
            return self.piece(e.value)
        if isinstance(e, t.Gather):
            base = self.piece(e.base)
            if base is None:
                return None
            select = base.get("select")
            picked = [select[i] for i in e.indices] if select is not None else list(e.indices)
            return {**base, "select": picked}
        if isinstance(e, t.PhysRead) and e.array in ("qpos", "qvel") and e.elements:
            return {"kind": e.array, "cols": [int(el[0]) for el in e.elements]}
        if isinstance(e, t.Apply) and e.func in ("quat_rotate", "quat_rotate_inv") and len(e.args) == 2:
            quat, vec = e.args
            if not (isinstance(quat, t.PhysRead) and quat.array == "qpos"):
                return None
            q = [int(el[0]) for el in quat.elements]
            if isinstance(vec, t.Const) and e.func == "quat_rotate_inv" and tuple(vec.values) == (0.0, 0.0, -1.0):
                return {"kind": "gravity", "quat": q}
            if isinstance(vec, t.PhysRead) and vec.array == "qvel":
                kind = "rotate" if e.func == "quat_rotate" else "rotate_inv"
                return {"kind": kind, "quat": q, "cols": [int(el[0]) for el in vec.elements]}
        return None
