"""`ksimdsl` on the command line, end to end, on the shipped tasks.

User errors exit 2 with `FILE:LINE:COL: error: ...` and never a traceback;
bugs exit 3 and say so. `train`, `train --resume` and `eval` run as real
subprocesses (`python -m ksimdsl.cli`) on one tiny cartpole run shared by the
module; cheap commands call `ksimdsl.cli.main` in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ksimdsl import __version__, cli
from ksimdsl.codegen import compile_task
from ksimdsl.runtime.loader import load_module

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
CARTPOLE = TASKS / "cartpole.ksim"
SHIPPED = sorted(TASKS.glob("*.ksim"))

#: Tiny training settings: the same training program as test_train.py's tiny runs, and the task's own
#: policy, so the session's persistent JAX cache compiles training and evaluation once for both files.
TINY_TRAIN = ("engine=mjx", "num_envs=8", "minibatches=2", "rollout=8", "epochs=1", "video=false")
#: Evaluation episodes: as many as test_train.py's learning test evaluates (the same compiled program).
EVAL_EPISODES = 16


def ksimdsl(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m ksimdsl.cli ARGS...` from the repository root, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "ksimdsl.cli", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def run_main(capsys: pytest.CaptureFixture, *args: object) -> SimpleNamespace:
    """`ksimdsl ARGS...` in this process: its exit code, stdout and stderr."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def assert_one_line_user_error(result, *fragments: str) -> str:
    """Exit status 2, no traceback, exactly one `error:` line holding every fragment; returns that line."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], result.stderr
    return errors[0]


# --------------------------------------------------------------------------- check


@pytest.mark.parametrize("task", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_check_accepts_every_shipped_task(capsys, task):
    result = run_main(capsys, "check", task)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{task}: ok (task '{task.stem}'")
    assert result.stderr == ""


def test_misspelled_joint_points_at_the_name_and_suggests_the_right_one(tmp_path):
    text = CARTPOLE.read_text().replace('"models/cartpole.xml"', f'"{TASKS / "models" / "cartpole.xml"}"')
    text = text.replace('joint_pos["slider"]', 'joint_pos["slidr"]', 1)
    task = tmp_path / "typo.ksim"
    task.write_text(text)
    lines = text.splitlines()
    line_no = next(i for i, line in enumerate(lines) if '"slidr"' in line) + 1
    col = lines[line_no - 1].index('"slidr"') + 1

    result = ksimdsl("check", task)  # a real process: nothing else may reach the terminal
    header = assert_one_line_user_error(result, "did you mean 'slider'")
    assert header.startswith(f"{task}:{line_no}:{col}: error: ")
    shown = result.stderr.splitlines()
    at = shown.index(header)
    source_line, caret_line = shown[at + 1], shown[at + 2]
    indent = source_line.index(lines[line_no - 1])  # the source line is shown, maybe indented
    assert caret_line.index("^") - indent == col - 1  # the caret sits under the name
    assert caret_line.strip() == "^" + "~" * (len('"slidr"') - 1)
    assert result.stdout == ""


def _syntax_error(tmp_path: Path) -> Path:
    path = tmp_path / "syntax.ksim"
    path.write_text('task x "doc"\nmodel "models/cartpole.xml\n')
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.ksim"
    path.write_text("")
    return path


def _binary(tmp_path: Path) -> Path:
    path = tmp_path / "binary.ksim"
    path.write_bytes(b"task x\n\xf0\x28\x8c\xbc\xff\xfe binary junk \x89PNG\r\n")
    return path


def _binary_with_nul(tmp_path: Path) -> Path:
    path = tmp_path / "nul.ksim"
    path.write_bytes(b"\x00\x00\x00ELF\x02\x01")
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.ksim"


@pytest.mark.parametrize(
    "make_task,fragment",
    [
        (_syntax_error, "syntax.ksim:2:7: error: unterminated string"),
        (_empty, "empty.ksim: error: empty task file"),
        (_binary, "binary.ksim:2:1: error: invalid UTF-8 byte 0xf0"),
        (_binary_with_nul, "nul.ksim:1:1: error:"),
        (_missing, "missing.ksim"),
    ],
    ids=["syntax", "empty", "binary", "binary-nul", "missing"],
)
def test_unreadable_task_files_are_one_clear_user_error(capsys, tmp_path, make_task, fragment):
    result = run_main(capsys, "check", make_task(tmp_path))
    assert_one_line_user_error(result, fragment)


# --------------------------------------------------------------------------- compile


@pytest.mark.parametrize(
    "backend,marker", [("jax", "import jax.numpy as jnp"), ("numba", "@njit(cache=True")], ids=["jax", "numba"]
)
def test_compile_prints_the_generated_module_and_writes_it_with_o(capsys, tmp_path, monkeypatch, backend, marker):
    monkeypatch.chdir(REPO)
    printed = run_main(capsys, "compile", "tasks/cartpole.ksim", "--backend", backend)
    assert printed.returncode == 0, printed.stderr
    header = printed.stdout.splitlines()[0]
    assert header == f"# Generated by ksimdsl {__version__} from tasks/cartpole.ksim -- do not edit."
    assert f"# backend: {backend}" in printed.stdout and marker in printed.stdout

    out = tmp_path / "gen" / f"cartpole_{backend}.py"
    written = run_main(capsys, "compile", "tasks/cartpole.ksim", "--backend", backend, "-o", out)
    assert written.returncode == 0 and written.stdout == ""
    assert f"wrote {out}" in written.stderr
    assert out.read_text() == printed.stdout
    if backend == "jax":  # the module is loadable and describes the task
        module = load_module(out.read_text(), "cli_test:jax")
        assert module.SPEC["task"] == "cartpole" and module.SPEC["action_size"] == 1


def test_compile_to_an_unwritable_path_is_a_user_error(capsys):
    result = run_main(capsys, "compile", CARTPOLE, "-o", "/proc/forbidden/x.py")
    assert_one_line_user_error(result, "cannot write /proc/forbidden/x.py")
    assert result.stdout == ""


# --------------------------------------------------------------------------- train: bad input, internal errors


def test_unknown_override_key_lists_the_valid_keys(capsys, tmp_path):
    run_dir = tmp_path / "run"
    result = run_main(capsys, "train", CARTPOLE, "engine=mjx", "num_env=4", "--run-dir", run_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first == "command line:1:12: error: unknown setting 'num_env' (did you mean 'num_envs'?)"
    assert "valid keys: " in result.stderr
    assert all(key in result.stderr for key in ("num_envs", "lr", "hidden", "dt", "max_seconds"))
    assert not run_dir.exists()  # nothing is written before the settings are valid


def test_a_bad_override_value_exits_2_pointing_at_the_item_without_a_run_dir(capsys, tmp_path):
    run_dir = tmp_path / "run"
    result = run_main(capsys, "train", CARTPOLE, "engine=mjx", "num_envs=0", "--run-dir", run_dir)
    first = assert_one_line_user_error(result, "bad value for 'num_envs': must be at least 1, got 0")
    assert first.startswith("command line:1:21: error:")
    assert "engine=mjx num_envs=0" in result.stderr and not run_dir.exists()
    result = run_main(capsys, "train", CARTPOLE, "engine=mjx", "num_envs=6", "--run-dir", run_dir)  # minibatches=4
    assert_one_line_user_error(result, "command line:1:12: error: num_envs=6 must be a multiple of minibatches=4")
    assert not run_dir.exists()


def test_a_rollout_larger_than_memory_is_refused_before_the_run_dir_exists(capsys, tmp_path, monkeypatch):
    from ksimdsl import settings

    monkeypatch.setattr(settings, "machine_memory_bytes", lambda: 2**16)
    run_dir = tmp_path / "run"
    result = run_main(capsys, "train", CARTPOLE, "engine=mjx", "--run-dir", run_dir)
    assert_one_line_user_error(result, "train: num_envs=128 x rollout=64 needs at least", "lower num_envs or rollout")
    assert not run_dir.exists()


def test_check_reports_settings_errors_at_their_position(capsys, tmp_path):
    text = CARTPOLE.read_text().replace('"models/cartpole.xml"', f'"{TASKS / "models" / "cartpole.xml"}"')
    text = text.replace("minibatches=4", "minibatches=3", 1)
    task = tmp_path / "settings.ksim"
    task.write_text(text)
    result = run_main(capsys, "check", task)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("train "))
    col = text.splitlines()[line - 1].index("num_envs=") + 1
    assert_one_line_user_error(result, f"{task}:{line}:{col}: error: num_envs=128 must be a multiple of minibatches=3")


def test_overrides_may_follow_the_options():
    from ksimdsl.cli import _parse

    args = _parse(["train", "t.ksim", "lr=1e-3", "--run-dir", "d", "steps=3", "--no-progress", "num_envs=8"])
    assert (args.task, args.run_dir, args.no_progress) == ("t.ksim", "d", True)
    assert args.overrides == ["lr=1e-3", "steps=3", "num_envs=8"]


def test_stray_arguments_are_still_refused(capsys):
    result = run_main(capsys, "train", CARTPOLE, "--run-dir", "d", "steps=3", "oops")
    assert result.returncode == 2 and "unrecognized arguments: oops" in result.stderr
    result = run_main(capsys, "check", CARTPOLE, "steps=3")  # check takes no overrides
    assert result.returncode == 2 and "unrecognized arguments: steps=3" in result.stderr


def test_an_internal_error_exits_3_and_says_it_is_a_bug(capsys, monkeypatch):
    import ksimdsl.frontend.check

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(ksimdsl.frontend.check, "check_file", crash)
    result = run_main(capsys, "check", CARTPOLE)
    assert result.returncode == 3
    assert "Traceback" in result.stderr  # shown, so the bug can be reported
    assert "internal error: RuntimeError: simulated crash" in result.stderr
    assert "This is a bug in ksimdsl" in result.stderr and "not in your task file" in result.stderr


# --------------------------------------------------------------------------- one tiny run: train, resume, eval, plot, export


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`train` 2 iterations of cartpole, then `train --resume RUN_DIR steps=3`, as subprocesses.

    Returns the run directory, both processes and the metrics as they were after the first one.
    """
    run_dir = tmp_path_factory.mktemp("cli") / "cartpole_run"
    first = ksimdsl("train", "tasks/cartpole.ksim", *TINY_TRAIN, "steps=2", "--run-dir", run_dir, "--no-progress")
    assert first.returncode == 0, first.stderr[-3000:]
    metrics_after_first = (run_dir / "metrics.jsonl").read_text().splitlines()
    resumed = ksimdsl("train", "--resume", run_dir, "steps=3", "--no-progress")
    return SimpleNamespace(dir=run_dir, first=first, resumed=resumed, metrics_after_first=metrics_after_first)


def test_train_writes_a_complete_run_directory(tiny_run, monkeypatch):
    run_dir = tiny_run.dir
    assert f"run directory: {run_dir}" in tiny_run.first.stdout
    assert "Traceback" not in tiny_run.first.stderr
    records = [json.loads(line) for line in tiny_run.metrics_after_first]
    assert [r["iteration"] for r in records] == [1, 2]
    assert [r["env_steps"] for r in records] == [64, 128]  # 8 envs x 8 steps per iteration
    assert {"wall_s", "episode_return", "episode_length", "sps", "reward/balance", "termination/fell"} <= set(records[0])

    config = json.loads((run_dir / "config.json").read_text())
    assert config["launch"]["task_path"] == str(CARTPOLE)
    assert config["launch"]["engine"] == "mjx"
    assert config["spec"]["train"]["num_envs"] == 8 and config["spec"]["train"]["epochs"] == 1
    assert (run_dir / "task.ksim").read_text() == CARTPOLE.read_text()
    monkeypatch.chdir(REPO)  # the generated header names the task relative to the working directory
    assert (run_dir / "generated" / "kernels_jax.py").read_text() == compile_task("tasks/cartpole.ksim").source
    assert (run_dir / "checkpoints" / "ckpt_00000002.safetensors").is_file()


def test_train_resume_continues_from_the_last_checkpoint(tiny_run):
    assert tiny_run.resumed.returncode == 0, tiny_run.resumed.stderr[-3000:]
    assert "resuming from ckpt_00000002.safetensors" in tiny_run.resumed.stdout
    records = [json.loads(line) for line in (tiny_run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert records[-1]["env_steps"] == 3 * 8 * 8
    assert (tiny_run.dir / "checkpoints" / "ckpt_00000003.safetensors").is_file()


def test_eval_json_reports_the_deterministic_policy(tiny_run):
    result = ksimdsl(
        "eval", "tasks/cartpole.ksim", "--run", tiny_run.dir, "--json", "--episodes", EVAL_EPISODES, "--engine", "mjx"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["episodes"] == EVAL_EPISODES and report["iteration"] == 3
    assert len(report["returns"]) == len(report["lengths"]) == EVAL_EPISODES
    assert 1 <= report["mean_length"] <= 1000
    # the balance reward lies in (0, 1] per step
    assert 0 < report["mean_return"] <= report["mean_length"]
    np.testing.assert_allclose(report["mean_return"], np.mean(report["returns"]), rtol=1e-6)
    np.testing.assert_allclose(report["std_return"], np.std(report["returns"]), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(report["mean_length"], np.mean(report["lengths"]))


def test_eval_of_a_missing_run_is_a_one_line_error(capsys, tmp_path):
    result = run_main(capsys, "eval", CARTPOLE, "--run", tmp_path / "nope", "--json")
    assert_one_line_user_error(result, "does not exist")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_plot_writes_pngs_of_the_run(capsys, tiny_run, tmp_path):
    out = tmp_path / "plots"
    result = run_main(capsys, "plot", tiny_run.dir, "-o", out)
    assert result.returncode == 0, result.stderr
    written = [Path(line.removeprefix("wrote ")) for line in result.stdout.splitlines()]
    assert written and {p.parent for p in written} == {out}
    assert {"returns.png", "rewards.png"} <= {p.name for p in written}
    for path in written:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 200


def test_export_writes_an_onnx_actor(capsys, tiny_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "policy.onnx"
    result = run_main(capsys, "export", CARTPOLE, "--run", tiny_run.dir, "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["ksimdsl.task"] == "cartpole" and meta["ksimdsl.iteration"] == "3"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    obs = np.array([[0.1, 1.0, 0.0, 0.0, 0.0], [-0.3, 0.9, 0.4, 1.0, -2.0]], np.float32)  # [x, cos, sin, xd, thd]
    (action,) = session.run(None, {"obs": obs})
    assert action.shape == (2, 1) and np.all(np.isfinite(action))
