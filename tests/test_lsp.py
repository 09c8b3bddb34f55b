"""`ksimdsl lsp`: a real client exchange over the server's stdio pipes, plus fuzzed edits.

One server process serves the whole module (starting it imports the checker
and MuJoCo); each test opens its own document URI.
"""

from __future__ import annotations

import random
import shutil
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest.importorskip("lsprotocol")

from lsp_client import ROOT, LspClient, LspError  # noqa: E402

TASKS = ROOT / "tasks"
SHIPPED = sorted(TASKS.glob("*.ksim"))


@pytest.fixture(scope="module")
def client():
    c = LspClient("--debounce-ms", "30")
    caps = c.initialize()["capabilities"]
    assert caps["hoverProvider"] and caps["definitionProvider"] and caps["renameProvider"]
    assert '"' in caps["completionProvider"]["triggerCharacters"]
    assert caps["renameProvider"] == {"prepareProvider": True}
    yield c
    assert c.close() == 0, "".join(c.stderr_lines)


def _pos(text: str, needle: str, offset: int = 0, nth: int = 0) -> tuple[int, int]:
    """0-based (line, character) of the `nth` occurrence of `needle` in `text`, plus `offset`."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at)
    return line, at - (text.rfind("\n", 0, at) + 1) + offset


def _range(text: str, needle: str, nth: int = 0) -> dict:
    line, ch = _pos(text, needle, nth=nth)
    return {"start": {"line": line, "character": ch}, "end": {"line": line, "character": ch + len(needle)}}


def _doc(tmp_path: Path, name: str, text: str) -> Path:
    """A task file next to a copy of the shipped models (so `model` lines resolve)."""
    models = tmp_path / "models"
    if not models.exists():
        shutil.copytree(TASKS / "models", models)
    p = tmp_path / name
    p.write_text(text)
    return p


def _hover_text(client: LspClient, uri: str, line: int, ch: int) -> str:
    h = client.request("textDocument/hover", client.at(uri, line, ch))
    assert h is not None
    return h["contents"]["value"]


# --------------------------------------------------------------------------- the exchange


def test_diagnostics_match_check_and_clear_after_fix(client, tmp_path):
    from ksimdsl.errors import KsimError
    from ksimdsl.frontend.check import check_file

    good = (TASKS / "cartpole.ksim").read_text()
    bad = good.replace('joint_pos["hinge_1"]    # pole', 'joint_pos["hinge_l"]    # pole').replace(
        "cos(pole) < 0.75", "cos(pol) < 0.75"
    )
    path = _doc(tmp_path, "cartpole.ksim", bad)
    with pytest.raises(KsimError) as err:
        check_file(str(path))
    expected = err.value.diagnostics
    assert len(expected) == 2  # two independent errors, both reported

    uri = client.open(path, bad)
    diags = client.diagnostics(uri, 1)
    assert [d["message"] for d in diags] == [d.message + "".join(f"\nnote: {n}" for n in d.notes) for d in expected]
    assert diags[0]["range"] == _range(bad, '"hinge_l"')
    nth = bad[: bad.index("cos(pol)")].count("pol")
    assert diags[1]["range"] == _range(bad, "pol", nth=nth)  # the unknown name only
    assert "did you mean 'hinge_1'" in diags[0]["message"]

    # quick fix: replace with the suggestion
    actions = client.request(
        "textDocument/codeAction",
        {"textDocument": {"uri": uri}, "range": diags[0]["range"], "context": {"diagnostics": [diags[0]]}},
    )
    assert actions[0]["kind"] == "quickfix"
    (edit,) = actions[0]["edit"]["changes"][uri]
    assert edit["newText"] == "hinge_1"
    line, ch = _pos(bad, "hinge_l")
    assert edit["range"] == {"start": {"line": line, "character": ch}, "end": {"line": line, "character": ch + 7}}

    client.change(uri, 2, good)
    assert client.diagnostics(uri, 2) == []


def test_model_failure_is_on_the_model_line(client, tmp_path):
    text, uri, (diag,) = _open_variant(client, tmp_path, "cartpole.ksim", "models/cartpole.xml", "models/nope.xml")
    assert "model file 'models/nope.xml' not found" in diag["message"]
    assert diag["range"] == _range(text, '"models/nope.xml"')


def test_syntax_errors_keep_the_rest_navigable(client, tmp_path):
    text, uri, (diag,) = _open_variant(client, tmp_path, "cartpole.ksim", "reward\n", "rewrad\n")
    assert "did you mean 'reward'" in diag["message"]
    # the other statements still parse: definitions and the outline work
    line, ch = _pos(text, "pole)", nth=0)
    (loc,) = client.request("textDocument/definition", client.at(uri, line, ch))
    assert loc["range"]["start"]["line"] == _pos(text, "let pole")[0]


def test_hover(client):
    path = TASKS / "walk.ksim"
    text = path.read_text()
    uri = client.open(path)
    assert client.diagnostics(uri, 1) == []
    # an expression: shape, type and unit
    line, ch = _pos(text, "joint_pos - default_joint_pos")
    assert "vector[21] rad" in _hover_text(client, uri, line, ch)
    assert "positions of the hinge and slide joints" in _hover_text(client, uri, line, ch)
    # a let
    assert "let height: scalar m" in _hover_text(client, uri, *_pos(text, "let height", 4))
    # a built-in function's documentation and signature
    hv = _hover_text(client, uri, *_pos(text, "exp_kernel(local_lin"))
    assert "exp_kernel(x, s)" in hv and "exp(-|x|^2" in hv
    # quoted MJCF names and globs
    assert "sensor 'imu_gyro'" in _hover_text(client, uri, *_pos(text, '"imu_gyro"', 2))
    hv = _hover_text(client, uri, *_pos(text, '"hip_y_*"', 2))
    assert "matches 2 joints" in hv and "hip_y_left" in hv
    hv = _hover_text(client, uri, *_pos(text, '"foot_left"', 2))
    assert "body 'foot_left'" in hv
    # a unit literal
    assert "60deg = 1.0472 rad" in _hover_text(client, uri, *_pos(text, "> 60deg", 3))
    # a metric: its type, and the type of its expression
    assert "metric forward_speed: scalar" in _hover_text(client, uri, *_pos(text, "forward_speed =", 2))


def test_hover_types_while_the_file_has_errors(client, tmp_path):
    text, uri, (diag,) = _open_variant(client, tmp_path, "walk.ksim", "norm2(actuator_force)", "norm2(actuator_forc)")
    assert "unknown name 'actuator_forc'" in diag["message"]
    line, ch = _pos(text, "joint_pos - default_joint_pos")
    assert "vector[21] rad" in _hover_text(client, uri, line, ch)  # from the check of the other items


def test_hover_joint_range(client):
    path = TASKS / "cartpole.ksim"
    text = path.read_text()
    uri = client.open(path)
    hv = _hover_text(client, uri, *_pos(text, '"slider"', 3))
    assert hv.startswith("joint 'slider': slide")
    assert "setting `dt`: a duration" in _hover_text(client, uri, *_pos(text, "dt=10ms"))
    assert "`margin` (default 0.0)" in _hover_text(client, uri, *_pos(text, "margin=2", 1))


def _labels(client: LspClient, uri: str, line: int, ch: int) -> list[str]:
    return [i["label"] for i in client.request("textDocument/completion", client.at(uri, line, ch))["items"]]


def _open_variant(client: LspClient, tmp_path: Path, task: str, old: str, new: str) -> tuple[str, str, list]:
    """Open a copy of a shipped task with `old` replaced by `new`: (text, uri, its first diagnostics)."""
    text = (TASKS / task).read_text().replace(old, new)
    assert text != (TASKS / task).read_text()
    uri = client.open(_doc(tmp_path, f"variant_{task}", text), text)
    return text, uri, client.diagnostics(uri, 1)


def test_completion(client, tmp_path):
    new = 'let probe = joint_pos["\nlet pole = '
    text, uri, _ = _open_variant(client, tmp_path, "cartpole.ksim", "let pole = ", new)
    line, ch = _pos(text, 'joint_pos["', 11)
    assert _labels(client, uri, line, ch) == ["slider", "hinge_1"]
    # statement keywords at the start of a line
    labels = _labels(client, uri, line + 1, 0)
    assert {"let", "state", "reward", "observe"} <= set(labels)
    # expressions: built-ins with signatures, lets in scope
    line, ch = _pos(text, "(cos(pole) + 1)", 1)
    items = client.request("textDocument/completion", client.at(uri, line, ch))["items"]
    byname = {i["label"]: i for i in items}
    assert byname["tolerance"]["detail"].startswith("tolerance(x, lo=0, hi=0, margin=0")
    assert {"cart", "pole", "joint_vel", "uniform"} <= set(byname)
    assert "upright" not in byname  # not yet declared at this line


def test_completion_in_lookups_and_contact(client, tmp_path):
    new = 'let s = sensor("\nlet c = contact(["foot_left", "\nlet moving'
    text, uri, _ = _open_variant(client, tmp_path, "walk.ksim", "let moving", new)
    assert "imu_gyro" in _labels(client, uri, *_pos(text, 'sensor("\n', 8))
    labels = _labels(client, uri, *_pos(text, '"foot_left", "\n', 14))
    assert "floor" in labels and "torso" in labels  # geoms and bodies
    assert _labels(client, uri, *_pos(text, "cmd.vel.xy) > 0.1", 4)) == ["vel"]


def test_definition_references_symbols(client):
    path = TASKS / "walk.ksim"
    text = path.read_text()
    uri = client.open(path)
    # a state used in an observation -> its declaration
    line, ch = _pos(text, "air_time  = air_time", 14)
    (loc,) = client.request("textDocument/definition", client.at(uri, line, ch))
    assert loc["range"] == _range(text, "air_time[2]".split("[")[0], nth=_nth_decl(text, "state air_time") )
    refs = client.request("textDocument/references", client.at(uri, line, ch, context={"includeDeclaration": True}))
    assert len(refs) == 3  # declaration, its update, the critic observation
    # a command
    line, ch = _pos(text, "cmd.vel.z", 5)
    (loc,) = client.request("textDocument/definition", client.at(uri, line, ch))
    assert loc["range"]["start"]["line"] == _pos(text, "command vel resample")[0]
    # an observation: the same name in both groups
    refs = client.request("textDocument/references", client.at(uri, *_pos(text, "    height    = height", 5),
                                                                context={"includeDeclaration": True}))
    assert len(refs) == 1
    symbols = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    names = [s["name"] for s in symbols]
    assert {"task walk", "height", "air_time", "vel", "observe actor", "reward", "terminate", "push"} <= set(names)
    reward = next(s for s in symbols if s["name"] == "reward")
    assert [c["name"] for c in reward["children"]][:3] == ["alive", "track_lin", "track_yaw"]
    metric = next(s for s in symbols if s["name"] == "metric")
    assert [c["name"] for c in metric["children"]] == ["forward_speed", "lateral_speed", "yaw_rate"]


def _nth_decl(text: str, decl: str) -> int:
    """Which occurrence of the declared name (the part after the keyword) the declaration is."""
    name = decl.split()[1]
    at = text.index(decl) + len(decl) - len(name)
    return text.count(name, 0, at)


def test_rename(client, tmp_path):
    text = (TASKS / "cartpole.ksim").read_text()
    path = _doc(tmp_path, "rename.ksim", text)
    uri = client.open(path, text)
    line, ch = _pos(text, "let pole", 5)
    prep = client.request("textDocument/prepareRename", client.at(uri, line, ch))
    assert prep["placeholder"] == "pole"
    edit = client.request("textDocument/rename", client.at(uri, line, ch, newName="theta"))
    edits = edit["changes"][uri]
    assert len(edits) == text.count("(pole)") + 1 and all(e["newText"] == "theta" for e in edits)
    with pytest.raises(LspError, match="built-in"):
        client.request("textDocument/rename", client.at(uri, line, ch, newName="joint_pos"))
    with pytest.raises(LspError, match="let"):
        client.request("textDocument/rename", client.at(uri, *_pos(text, "balance"), newName="x"))


def test_model_file_reload(client, tmp_path):
    text = (TASKS / "cartpole.ksim").read_text()
    path = _doc(tmp_path, "reload.ksim", text)
    uri = client.open(path, text)
    assert client.diagnostics(uri, 1) == []
    xml = tmp_path / "models" / "cartpole.xml"
    original = xml.read_text()
    assert 'name="hinge_1"' in original
    xml.write_text(original.replace('name="hinge_1"', 'name="hinge_A"'))
    client.notify("workspace/didChangeWatchedFiles", {"changes": [{"uri": xml.as_uri(), "type": 2}]})
    diags = _published(client, uri, lambda d: bool(d))
    assert "hinge_1" in diags[0]["message"]
    xml.write_text(original)
    assert _published(client, uri, lambda d: not d, timeout=10) == []  # the poll notices the file came back


def _published(client: LspClient, uri: str, pred, timeout: float = 30) -> list[dict]:
    """The diagnostics of the first publication for `uri` that satisfies `pred` (earlier ones are consumed)."""
    msg = client.wait_for(
        lambda n: n.get("method") == "textDocument/publishDiagnostics"
        and n["params"]["uri"] == uri
        and pred(n["params"]["diagnostics"]),
        timeout,
    )
    return msg["params"]["diagnostics"]


def test_bad_requests_are_answered_not_fatal(client):
    # unknown document, out-of-range positions, garbage params: errors or nulls, never a dead server
    with pytest.raises(LspError):
        client.request("textDocument/hover", client.at("file:///nope/x.ksim", 0, 0))
    path = TASKS / "cartpole.ksim"
    uri = client.open(path)
    for line, ch in [(10_000, 0), (0, 10_000), (3, 5)]:
        client.request("textDocument/hover", client.at(uri, line, ch))
        client.request("textDocument/completion", client.at(uri, line, ch))
        client.request("textDocument/definition", client.at(uri, line, ch))
    with pytest.raises(LspError):
        client.request("textDocument/hover", {"bogus": 1})
    assert client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})


def test_edits_are_debounced(client, tmp_path):
    text = (TASKS / "cartpole.ksim").read_text()
    path = _doc(tmp_path, "debounce.ksim", text)
    uri = client.open(path, text)
    assert client.diagnostics(uri, 1) == []
    for version in range(2, 7):  # a burst of keystrokes, faster than the debounce
        client.change(uri, version, text.replace("cos(pole) < 0.75", "cos(pole) < 0.75" + " + x" * version))
    diags = client.diagnostics(uri, 6)
    assert len(diags) == 1 and "unknown name 'x'" in diags[0]["message"]
    published = [n for n in client.notifications if n["params"].get("uri") == uri]
    assert len(published) < 4  # the intermediate versions were not each checked


def test_the_server_never_imports_the_runtime():
    import subprocess
    import sys

    code = (
        "import sys; from ksimdsl.lsp.server import build_server; from ksimdsl.lsp.analysis import analyze; "
        f"build_server(); analyze({str(TASKS / 'walk.ksim')!r}, open({str(TASKS / 'walk.ksim')!r}).read()); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'numba', 'sympy') "
        "or m.startswith(('ksimdsl.runtime', 'ksimdsl.codegen', 'ksimdsl.ir'))); print(bad); assert not bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- fuzzing

_SNIPPETS = ['"', "(", ")", "[", "]", "=", ":", "..", "~", "\n", "    ", "\t", "#", "deg", "*", ".x", "cmd.", "é", "let "]
_SNIPPETS += ["\x00", "𝑥", ","]


@pytest.mark.parametrize("task", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_fuzzed_edits_never_crash(client, task, tmp_path):
    rng = random.Random(f"lsp-fuzz-{task.stem}")
    text = task.read_text()
    path = _doc(tmp_path, task.name, text)
    uri = client.open(path, text)
    logged = len(client.stderr_lines)
    version = 1
    for step in range(40):
        lines = text.split("\n")
        line = rng.randrange(len(lines))
        a = rng.randrange(len(lines[line]) + 1)
        if rng.random() < 0.5 and lines[line]:
            b = min(len(lines[line]), a + rng.randrange(1, 8))
            new = ""
        else:
            b = a
            some = text[rng.randrange(len(text)) :][: rng.randrange(1, 12)]  # a piece of the task itself
            new = rng.choice(_SNIPPETS) if rng.random() < 0.7 else some
        lines[line] = lines[line][:a] + new + lines[line][b:]
        text = "\n".join(lines)
        version += 1
        client.edit(uri, version, {"start": {"line": line, "character": a}, "end": {"line": line, "character": b}}, new)
        if step % 4 == 0:  # requests against the live, unchecked text too
            pos = client.at(uri, line, a)
            client.request("textDocument/hover", pos)
            client.request("textDocument/completion", pos)
            client.request("textDocument/definition", pos)
            client.request("textDocument/references", {**pos, "context": {"includeDeclaration": True}})
            client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
            client.request("textDocument/codeAction", {"textDocument": {"uri": uri},
                           "range": {"start": pos["position"], "end": pos["position"]}, "context": {"diagnostics": []}})
    client.diagnostics(uri, version)
    assert client.proc.poll() is None
    new_log = client.stderr_lines[logged:]
    assert not any("internal error" in ln for ln in new_log), "".join(new_log)


def test_ranges_count_utf16_code_units():
    from ksimdsl.lsp.analysis import analyze
    from ksimdsl.lsp.features import Document

    text = (TASKS / "walk.ksim").read_text().replace('sensor("imu_gyro")', 'sensor("𝑥é_imu")  ')
    text = text.replace("\n", "\r\n")  # and CRLF line ends
    doc = Document.of("file:///walk.ksim", analyze(str(TASKS / "walk.ksim"), text))
    (diag,) = doc.diagnostics()
    line = text.split("\r\n")[diag.range.start.line]
    start = line.index('"𝑥é_imu"')
    assert diag.range.start.character == start
    assert diag.range.end.character == start + len('"𝑥é_imu"') + 1  # 𝑥 is two UTF-16 code units
    assert "no sensor named" in diag.message


BARE_ROBOT = """<mujoco><compiler angle="radian"/><worldbody>
  <body name="base" pos="0 0 1"><freejoint name="root"/><geom name="base" type="box" size=".1 .1 .1"/>
    <site name="imu_site"/>
    <body name="leg"><joint name="hip" axis="0 1 0" range="-1 1"/><geom name="foot" type="sphere" size=".05"/></body>
  </body></worldbody></mujoco>"""


def test_hover_and_completion_see_the_composed_model(client, tmp_path):
    (tmp_path / "bare.xml").write_text(BARE_ROBOT)
    text = textwrap.dedent('''\
        task t "composed"
        model "bare.xml"
            floor
            imu imu at "imu_site"
        actuators position joints="*" kp=10 effort=5
        observe actor
            gyro = sensor("imu_gyro")
        reward
            down 1 : contact("foot", "floor")
        ''')
    path = tmp_path / "composed.ksim"
    path.write_text(text)
    uri = client.open(path, text)
    assert client.diagnostics(uri, 1) == []
    assert "sensor 'imu_gyro'" in _hover_text(client, uri, *_pos(text, '"imu_gyro"', 2))
    assert "geom 'floor'" in _hover_text(client, uri, *_pos(text, '"floor"', 2))
    # completing a sensor name while the line is broken: the composed sensors are offered
    broken = text.replace('sensor("imu_gyro")', 'sensor("')
    client.change(uri, 2, broken)
    assert client.diagnostics(uri, 2)
    assert {"imu_gyro", "imu_acc", "imu_quat"} <= set(_labels(client, uri, *_pos(broken, 'sensor("', 8)))
