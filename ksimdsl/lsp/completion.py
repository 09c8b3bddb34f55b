"""Completion: statement keywords, settings, built-ins with signatures, names in scope, MJCF names in strings.

The context is read from the text of the current line before the cursor (the
line being typed rarely parses); the names come from the last analysis (the
partial syntax tree and the loaded model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend.grammar import STATEMENT_KEYWORDS
from ksimdsl.lsp import modelnames
from ksimdsl.lsp.analysis import Analysis
from ksimdsl.lsp.hover import builtin_doc, function_signature
from ksimdsl.lsp.symbols import SymbolIndex
from ksimdsl.model.terrain import TILE_KINDS

__all__ = ["Item", "complete"]

_WORD_END = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_ATTR_END = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\.([A-Za-z_0-9]*)$")
_STATEMENT_SNIPPETS = {
    "task": 'task NAME "description"',
    "model": 'model "models/robot.xml"',
    "physics": "physics dt=5ms ctrl_dt=20ms",
    "engine": "engine auto | mjx | mujoco",
    "episode": "episode 20s",
    "actuators": "actuators position kp=100 kd=5",
    "let": "let NAME = EXPR",
    "state": "state NAME[n] = INIT -> UPDATE",
    "command": "command NAME resample every 5s",
    "observe": "observe actor | critic",
    "reward": "reward  (then: NAME WEIGHT : EXPR)",
    "terminate": "terminate  (then: NAME : CONDITION [success])",
    "metric": "metric  (then: NAME = EXPR, logged, never rewarded)",
    "randomize": "randomize  (then: model_field *= uniform(a, b))",
    "reset": "reset  (then: joint_pos += uniform(a, b))",
    "event": "event NAME every uniform(1s, 3s)",
    "reference": 'reference "clips/walk.npz" loop | clamp  random | fixed',
    "curriculum": "curriculum episode_length | distance | linear | constant",
    "policy": "policy mlp hidden=[256, 256]",
    "train": "train num_envs=128 steps=1000",
}


@dataclass(frozen=True)
class Item:
    """A completion: `kind` is an LSP CompletionItemKind name; the edit replaces columns [start, cursor) (0-based)."""

    label: str
    kind: str
    detail: str = ""
    doc: str = ""
    start: int = 0
    insert: str | None = None


def _open_bracket(text: str) -> tuple[str, int] | None:
    """The innermost unclosed bracket of `text` (strings skipped): (char, index)."""
    stack: list[tuple[str, int]] = []
    in_str = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_str = not in_str
        elif in_str:
            continue
        elif ch in "([":
            stack.append((ch, i))
        elif ch in ")]" and stack:
            stack.pop()
    return stack[-1] if stack else None


def _word_before(text: str, end: int) -> str:
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", text[:end])
    return m.group(1) if m else ""


def _string_kind(before: str) -> str | None:
    """The kind of model name a string opened after `before` names."""
    br = _open_bracket(before)
    if br is None:
        return None
    ch, i = br
    if ch == "[":
        word = _word_before(before, i)
        if word:
            return modelnames.kind_for_base(word)
        outer = _open_bracket(before[:i])
        if outer and outer[0] == "(":
            return modelnames.kind_for_call(_word_before(before, outer[1]))
        return None
    return modelnames.kind_for_call(_word_before(before, i))


def _in_comment(prefix: str) -> bool:
    in_str = False
    for ch in prefix:
        if ch == '"':
            in_str = not in_str
        elif ch == "#" and not in_str:
            return True
    return False


def _in_string(an: Analysis, prefix: str) -> list[Item] | None:
    quotes = [i for i, c in enumerate(prefix) if c == '"']
    if len(quotes) % 2 == 0:
        return None
    q = quotes[-1]
    before = prefix[:q]
    if re.match(r"\s*(model|task)\b", before):
        return []
    kind = _string_kind(before)
    if kind is None or an.model is None:
        return []
    items = []
    for name, k in dict.fromkeys(modelnames.candidates(an.model, kind)):
        items.append(Item(name, "Value", k, modelnames.describe(an.model, k, name), q + 1))
    return items


def _block_keyword(lines: list[str], line0: int) -> str:
    """The first word of the top-level statement holding 0-based line `line0`."""
    for i in range(min(line0, len(lines) - 1), -1, -1):
        ln = lines[i]
        if ln[:1] not in ("", " ", "\t", "#"):
            m = re.match(r"[A-Za-z_]+(?:\s+[A-Za-z_]+)?", ln)
            return m.group(0) if m else ""
    return ""


def _parent_line(lines: list[str], line0: int, indent: int) -> str:
    """The nearest line above 0-based line `line0` indented less than `indent` columns ("" if none)."""
    for i in range(min(line0, len(lines)) - 1, -1, -1):
        ln = lines[i]
        if ln.strip() and not ln.lstrip().startswith("#") and len(ln) - len(ln.lstrip(" ")) < indent:
            return ln
    return ""


def _settings_keys(block: str) -> dict[str, str]:
    words = block.split()
    head = words[0] if words else ""
    arg = words[1] if len(words) > 1 else ""
    if head == "physics":
        return {k: v.kind for k, v in bi.PHYSICS_SETTINGS.items()}
    if head == "train":
        return {k: v.kind for k, v in bi.TRAIN_SETTINGS.items()}
    if head == "policy":
        return {k: v.kind for k, v in bi.POLICY_SETTINGS.items()}
    if head == "actuators":
        return {k: "float" for k in bi.ACTUATOR_KINDS.get(arg, {})}
    if head == "curriculum":
        return {k: v.kind for k, v in bi.CURRICULUM_KINDS.get(arg, {}).items()}
    if head == "command":
        return {k: v.kind for k, v in bi.COMMAND_SETTINGS.items()}
    return {}


def _expression_items(an: Analysis, index: SymbolIndex, line1: int, start: int) -> list[Item]:
    items: list[Item] = []
    types = {}
    if an.typed_task is not None:
        types = {d.name: str(d.value.type) for d in an.typed_task.lets}
        types.update({s.name: str(s.type) for s in an.typed_task.states})
    for sym in index.of_kind("let", "state"):
        if sym.kind == "let" and sym.name_span.line >= line1:
            continue  # a let is visible after its declaration
        items.append(Item(sym.name, "Variable", f"{sym.kind} {types.get(sym.name, '')}".strip(), "", start))
    if index.of_kind("command"):
        items.append(Item("cmd", "Module", "commands: cmd.NAME", "", start))
    for name, doc in bi.QUANTITIES.items():
        items.append(Item(name, "Constant" if name == "ctrl_dt" else "Variable", "quantity", doc, start))
    for name in (*bi.FUNCTIONS, *bi.LOOKUPS, *bi.DISTRIBUTIONS, "prev"):
        items.append(Item(name, "Function", function_signature(name), builtin_doc(name) or "", start, f"{name}("))
    return items


def _attr_items(an: Analysis, index: SymbolIndex, base: str, start: int) -> list[Item]:
    if base == "cmd":
        cmds = index.of_kind("command")
        fields = {s.group: [] for s in cmds}
        for f in index.of_kind("command_field"):
            fields.setdefault(f.group, []).append(f.name)
        return [Item(c.name, "Field", "command", "fields: " + ", ".join(fields.get(c.name, [])), start) for c in cmds]
    items = []
    if base.startswith("cmd.") and base.count(".") == 1:
        for f in index.of_kind("command_field"):
            if f.group == base[4:]:
                items.append(Item(f.name, "Field", f"field of command {f.group}", "", start))
    for sw in ("x", "y", "z", "w", "xy", "xyz"):
        if all(i.label != sw for i in items):
            items.append(Item(sw, "Property", "swizzle", "", start))
    return items


_SETTINGS_HEADS = ("physics", "train", "policy", "actuators", "curriculum", "command")
_CONTINUED_HEADS = ("physics", "train", "policy", "curriculum")  # settings may go on over indented lines


def _line_start_items(an: Analysis, lines: list[str], line0: int, start: int) -> list[Item] | None:
    """At the start of a line: statement keywords, or what an indented line of the block begins with."""
    if start == 0:
        return [Item(k, "Keyword", _STATEMENT_SNIPPETS.get(k, ""), "", start) for k in STATEMENT_KEYWORDS]
    block = _block_keyword(lines, line0 - 1)
    head = block.split()[0] if block else ""
    if head in ("reset", "event"):
        return [Item(n, "Variable", "reset target", bi.QUANTITIES.get(n, ""), start) for n in bi.RESET_TARGETS]
    if head == "randomize" and an.model is not None:
        return [Item(n, "Field", "MjModel field", "", start) for n in an.model.array_fields]
    if head == "actuators":
        words = ("kp", "kd", "effort", "armature", "joints", "latency", "zero_offset")
        return [Item(n, "Keyword", "", "", start) for n in words]
    if head == "model" and _parent_line(lines, line0, start).lstrip().startswith("terrain"):
        return [Item(k, "Keyword", "terrain tile", "", start) for k in TILE_KINDS]
    if head == "model":  # the composition block
        return [Item(n, "Keyword", "", "", start) for n in ("floor", "terrain", "imu", "pose", "collide")]
    if block == "observe critic":
        return [Item("actor", "Keyword", "every actor observation, clean", "", start)]
    if head in _CONTINUED_HEADS:
        return [Item(k, "Property", kind, "", start, f"{k}=") for k, kind in _settings_keys(block).items()]
    if head in ("reward", "terminate", "metric", "observe", "command"):
        return []  # the name of a new term, observation or field
    return None


def _choice_items(head: str, before: str, start: int) -> list[Item] | None:
    """Kinds after a statement keyword and the named choices of a setting."""
    kinds = {"engine": bi.ENGINES, "policy": bi.POLICY_KINDS, "actuators": tuple(bi.ACTUATOR_KINDS),
             "curriculum": tuple(bi.CURRICULUM_KINDS)}
    if head in kinds and not before[len(head):].strip():
        return [Item(k, "EnumMember", head, "", start) for k in kinds[head]]
    if re.search(r"\bsigmoid\s*=\s*$", before):
        return [Item(s, "EnumMember", "tolerance sigmoid", "", start) for s in bi.TOLERANCE_SIGMOIDS]
    if head == "policy" and re.search(r"\bdist\s*=\s*$", before):
        return [Item("normal", "EnumMember", "", "", start),
                Item("mixture", "EnumMember", "mixture(k)", "", start, "mixture(")]
    for key, spec in (*bi.PHYSICS_SETTINGS.items(), *bi.POLICY_SETTINGS.items(), *bi.TRAIN_SETTINGS.items()):
        if spec.choices and re.search(rf"\b{key}\s*=\s*$", before):
            return [Item(c, "EnumMember", key, "", start) for c in spec.choices]
    return None


def _keyword_arg_items(before: str, start: int) -> list[Item]:
    """`margin=` and the like inside the parentheses of a function call."""
    br = _open_bracket(before)
    func = _word_before(before, br[1]) if br and br[0] == "(" else ""
    if func not in bi.FUNCTIONS:
        return []
    return [
        Item(f"{p.name}=", "Property", f"{func} argument", "" if p.required else f"default {p.default}", start,
             f"{p.name}=")
        for p in bi.FUNCTIONS[func].params[1:]
    ]


def complete(an: Analysis, index: SymbolIndex, lines: list[str], line0: int, col0: int) -> list[Item]:
    """Completions at 0-based (line, column) of the current text `lines`."""
    line = lines[line0] if 0 <= line0 < len(lines) else ""
    prefix = line[:col0]
    if _in_comment(prefix):
        return []
    in_str = _in_string(an, prefix)
    if in_str is not None:
        return in_str
    word = _WORD_END.search(prefix)
    start = word.start() if word else col0
    before = prefix[:start]
    attr = _ATTR_END.search(prefix)
    if attr:
        return _attr_items(an, index, attr.group(1), attr.start(2))
    if not before.strip():
        at_start = _line_start_items(an, lines, line0, start)
        if at_start is not None:
            return at_start
    first = re.match(r"([A-Za-z_]+)\s+", line)
    head = first.group(1) if first else ""
    choices = _choice_items(head, before, start)
    if choices is not None:
        return choices
    block = _block_keyword(lines, line0)
    continued = line[:1].isspace() and (block.split() or [""])[0] in _CONTINUED_HEADS
    settings_line = head in _SETTINGS_HEADS or continued
    if settings_line and not re.search(r"=\s*$", before) and not _open_bracket(before):
        return [Item(k, "Property", kind, "", start, f"{k}=") for k, kind in _settings_keys(block).items()]
    return _keyword_arg_items(before, start) + _expression_items(an, index, line0 + 1, start)
