"""Built-in calls: math functions (argument binding, shape rules), prev() and distributions."""

from __future__ import annotations

from ksimdsl.errors import InternalCompilerError, Span, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Ctx, Part
from ksimdsl.frontend.check.folding import const_pairs


_DIST_CONTEXTS = (
    "reset, randomize, event and command blocks, state initial values, observation noise and bias, "
    "and zero_offset"
)


class Calls(Part):
    """Calls of built-in functions, `prev(...)` and distributions."""

    def call(self, node: ast.Call, ctx: Ctx) -> t.Expr:
        f = node.func
        if "." in f:  # `ref.body_pos("foot")`
            return self.cx.reference.call(node)
        if f in bi.DISTRIBUTIONS:
            return self.dist(node, ctx)
        if f == "prev":
            return self.prev(node, ctx)
        if f in bi.LOOKUPS:
            return self.cx.lookups.lookup(node)
        sig = bi.FUNCTIONS.get(f)
        if sig is None:
            if f in bi.QUANTITIES:
                self.fail(node.func_span, f"'{f}' is a quantity, not a function; write it without parentheses")
            candidates = [*bi.FUNCTIONS, *bi.LOOKUPS, *bi.DISTRIBUTIONS, "prev"]
            self.fail(node.func_span, f"unknown function '{f}'" + did_you_mean(f, candidates))
        return self.apply(sig, node, ctx)

    def bind(self, sig: bi.FunctionSig, node: ast.Call) -> dict[str, ast.Expr]:
        """Map positional and keyword arguments onto `sig.params` (missing optional ones omitted)."""
        names = sig.param_names
        if len(node.args) > len(names):
            self.fail(
                node.args[len(names)].span,
                f"{sig.name}() takes at most {len(names)} argument{'s' if len(names) > 1 else ''}, "
                f"got {len(node.args)}",
            )
        bound: dict[str, ast.Expr] = dict(zip(names, node.args))
        for kw in node.kwargs:
            if kw.name not in names:
                self.fail(
                    kw.span,
                    f"{sig.name}() has no parameter '{kw.name}'" + did_you_mean(kw.name, names),
                    f"parameters: {', '.join(names)}",
                )
            if kw.name in bound:
                self.fail(kw.span, f"{sig.name}() got '{kw.name}' twice")
            bound[kw.name] = kw.value
        for p in sig.params:
            if p.required and p.name not in bound:
                self.fail(node.span, f"{sig.name}() is missing its argument '{p.name}'")
        return bound

    def apply(self, sig: bi.FunctionSig, node: ast.Call, ctx: Ctx) -> t.Expr:
        bound = self.bind(sig, node)
        rule, span = sig.rule, node.span
        mode: str | None = None
        args: dict[str, t.Expr] = {}
        for p in sig.params:
            if p.mode:
                arg = bound.get(p.name)
                mode = str(p.default) if arg is None else self.mode(arg, sig, p)
            elif p.name in bound:
                args[p.name] = self.cx.exprs.expr(bound[p.name], ctx)
            elif p.default is not None:
                args[p.name] = t.Const(float(p.default), t.FLOAT, span)  # type: ignore[arg-type]

        def scalar_float(name: str) -> t.Expr:
            e = self.cx.shapes.as_float(args[name])
            if not e.type.is_scalar:
                self.fail(bound[name].span, f"{sig.name}()'s '{name}' must be a scalar, got {e.type}")
            return e

        def vec(name: str, n: int | None = None) -> t.Expr:
            e = self.cx.shapes.as_float(args[name])
            if e.type.is_scalar or (n is not None and e.type.shape != (n,)):
                want = f"vector[{n}]" if n else "a vector"
                self.fail(bound[name].span, f"{sig.name}()'s '{name}' must be {want}, got {e.type}")
            return e

        if rule == "reduce":
            x = self.cx.shapes.as_float(args["x"])
            return t.Apply(sig.name, (x,), t.FLOAT, span=span)
        if rule == "reduce_bool":
            x = args["x"]
            if x.type.kind != "bool":
                self.fail(bound["x"].span, f"{sig.name}() needs bools, got {x.type}")
            return t.Apply(sig.name, (x,), t.BOOL, span=span)
        if rule == "minmax":
            if "b" not in args:
                return t.Apply(f"reduce_{sig.name}", (self.cx.shapes.as_float(args["a"]),), t.FLOAT, span=span)
            a, b = self.cx.shapes.as_float(args["a"]), self.cx.shapes.as_float(args["b"])
            shape = self.cx.shapes.broadcast_shape(a.type, b.type, sig.name, span)
            return t.Apply(sig.name, (a, b), t.Type("float", shape), span=span)
        if rule == "elementwise":
            if sig.name == "tolerance":
                return self.tolerance(args, bound, mode, span)
            ordered = [self.cx.shapes.as_float(args[p.name]) for p in sig.params]
            shape: tuple[int, ...] = ()
            for e in ordered:
                shape = self.cx.shapes.broadcast_shape(t.Type("float", shape), e.type, sig.name, span)
            if len(ordered) == 1:
                self.cx.consts.require_real(sig.name, ordered[0], bound["x"].span)
            return t.Apply(sig.name, tuple(ordered), t.Type("float", shape), span=span)
        if rule == "exp_kernel":
            return t.Apply(sig.name, (self.cx.shapes.as_float(args["x"]), scalar_float("s")), t.FLOAT, span=span)
        if rule == "dot":
            a, b = self.cx.shapes.as_float(args["a"]), self.cx.shapes.as_float(args["b"])
            if a.type.shape != b.type.shape:
                self.fail(span, f"dot() needs two vectors of the same length, got {a.type} and {b.type}")
            return t.Apply("dot", (a, b), t.FLOAT, span=span)
        if rule == "cross":
            return t.Apply("cross", (vec("a", 3), vec("b", 3)), t.Type("float", (3,)), span=span)
        if rule == "angle":
            u, v = vec("u"), vec("v")
            if u.type.shape != v.type.shape:
                self.fail(span, f"angle() needs two vectors of the same length, got {u.type} and {v.type}")
            return t.Apply("angle", (u, v), t.FLOAT, span=span)
        if rule == "quat_rotate":
            return t.Apply(sig.name, (vec("q", 4), vec("v", 3)), t.Type("float", (3,)), span=span)
        if rule == "one_hot":
            i = scalar_float("i")
            n = self.cx.consts.const_int(bound["n"], "one_hot()'s n", minimum=1)
            n_const = t.Const(float(n), t.FLOAT, bound["n"].span)
            return t.Apply("one_hot", (i, n_const), t.Type("float", (n,)), span=span)
        if rule == "where":
            return self.where(args, bound, span)
        raise InternalCompilerError(f"function {sig.name!r} has unknown rule {rule!r}", span, self.cx.source)

    def mode(self, arg: ast.Expr, sig: bi.FunctionSig, p: bi.Param) -> str:
        word = arg.id if isinstance(arg, ast.Name) else arg.value if isinstance(arg, ast.Str) else None
        choices = bi.TOLERANCE_SIGMOIDS
        if word not in choices:
            self.fail(
                arg.span,
                f"{sig.name}()'s {p.name} must be one of {', '.join(choices)}"
                + (did_you_mean(word, choices) if word else ""),
            )
        return word

    def tolerance(self, args: dict[str, t.Expr], bound: dict[str, ast.Expr], mode: str | None, span: Span) -> t.Expr:
        x, lo, hi = (self.cx.shapes.as_float(args[k]) for k in ("x", "lo", "hi"))
        shape = self.cx.shapes.broadcast_shape(x.type, lo.type, "tolerance", span)
        shape = self.cx.shapes.broadcast_shape(t.Type("float", shape), hi.type, "tolerance", span)
        consts: dict[str, float] = {}
        for k in ("margin", "value_at_margin"):
            e = args[k]
            if not isinstance(e, t.Const) or not e.type.is_scalar:
                self.fail(bound[k].span if k in bound else span, f"tolerance()'s {k} must be a constant number")
            consts[k] = float(e.value)  # type: ignore[arg-type]
        if consts["margin"] < 0:
            self.fail(bound["margin"].span, "tolerance()'s margin must not be negative")
        v = consts["value_at_margin"]
        lenient = mode in ("linear", "cosine", "quadratic")
        if not ((0 <= v < 1) if lenient else (0 < v < 1)):
            rng = "[0, 1)" if lenient else "(0, 1)"
            where = bound["value_at_margin"].span if "value_at_margin" in bound else span
            self.fail(where, f"tolerance()'s value_at_margin must be in {rng} for sigmoid {mode}")
        if isinstance(lo, t.Const) and isinstance(hi, t.Const) and any(a > b for a, b in const_pairs(lo, hi)):
            self.fail(span, "tolerance() needs lo <= hi")
        ordered = (x, lo, hi, args["margin"], args["value_at_margin"])
        return t.Apply("tolerance", ordered, t.Type("float", shape), mode=mode, span=span)

    def where(self, args: dict[str, t.Expr], bound: dict[str, ast.Expr], span: Span) -> t.Expr:
        cond, a, b = args["cond"], args["a"], args["b"]
        if cond.type.kind != "bool":
            self.fail(bound["cond"].span, f"where()'s condition must be a bool, got {cond.type}")
        if a.type.kind != b.type.kind:
            a, b = self.cx.shapes.as_float(a), self.cx.shapes.as_float(b)
        shape = self.cx.shapes.broadcast_shape(cond.type, a.type, "where", span)
        shape = self.cx.shapes.broadcast_shape(t.Type("float", shape), b.type, "where", span)
        return t.Where(cond, a, b, t.Type(a.type.kind, shape), span)

    def prev(self, node: ast.Call, ctx: Ctx) -> t.Expr:
        if len(node.args) != 1 or node.kwargs:
            self.fail(node.span, "prev() takes exactly one expression")
        inner = self.cx.exprs.expr(node.args[0], ctx)
        if any(isinstance(n, t.Dist) for n in t.walk(inner)):
            self.fail(node.args[0].span, "prev() of a random draw has no meaning")
        slot = self.cx.prev_slot(inner)
        return t.Prev(inner, slot, inner.type, node.span)

    def dist(self, node: ast.Call, ctx: Ctx) -> t.Dist:
        if not ctx.allow_dist:
            self.fail(
                node.span,
                f"a distribution is not allowed in {ctx.what}; distributions belong in {_DIST_CONTEXTS}",
            )
        if node.kwargs:
            self.fail(node.kwargs[0].span, f"{node.func}() takes positional arguments only")
        lo_n, hi_n = bi.DISTRIBUTIONS[node.func]
        if not lo_n <= len(node.args) <= hi_n:
            self.fail(node.span, f"{node.func}() takes {lo_n} or {hi_n} arguments, got {len(node.args)}")
        inner = Ctx(f"the parameters of {node.func}()")
        params = [self.cx.exprs.float_expr(a, inner) for a in node.args]
        return self.make_dist(node, params)

    def make_dist(self, node: ast.Call, params: list[t.Expr]) -> t.Dist:
        shape: tuple[int, ...] = ()
        for p in params:
            shape = self.cx.shapes.broadcast_shape(t.Type("float", shape), p.type, node.func, node.span)
        if len(params) == 1:
            p = params[0]
            zero = t.Const(0.0, t.FLOAT, node.span)
            if node.func == "uniform" and isinstance(p, t.Const):
                params = [t.Const(self.cx.exprs.map_const(p, lambda x: -x), p.type, p.span), p]
            elif node.func == "uniform":
                params = [t.Unary("-", p, p.type, p.span), p]
            else:
                params = [zero, p]
        if node.func == "gaussian" and isinstance(params[1], t.Const) and any(v < 0 for v in params[1].values):
            self.fail(node.args[-1].span, "a gaussian's standard deviation must not be negative")
        lo, hi = params
        if node.func == "uniform" and isinstance(lo, t.Const) and isinstance(hi, t.Const):
            if any(a > b for a, b in const_pairs(lo, hi)):
                self.fail(node.span, "uniform(lo, hi) needs lo <= hi")
        return t.Dist(node.func, (params[0], params[1]), t.Type("float", shape), node.span)
