"""`ksimdsl view`: watch and steer a policy live, in MuJoCo's own viewer.

    run_viewer(task, policy, ViewConfig(seconds=None), reload=None)   # policy None: the zero action

One env of the C MuJoCo engine (`view_session.ViewSession`) is stepped with the
policy in real time while `mujoco.viewer.launch_passive` shows it; episodes
auto-reset on termination as in training. The viewer gets its own `MjData`
(of the task's model), into which the env's state is copied every frame, so a
recompiled task (`--watch`) can replace the env under a running window.

Keys (their effect lives in `view_state.ViewerControls`, tested without a
window): Space pause, N one step, R / Backspace reset, P push, arrows and Q/E
the velocity command, Home/End + PgUp/PgDn any command field, Delete release
the commands, +/- speed. MuJoCo's own shortcuts on Q, E, N and P (visualization
flags) are switched back when the viewer uses the key; R also toggles MuJoCo's
reflections (Backspace resets without that). The mouse works as in MuJoCo's
viewer: double-click a body, then Ctrl + right-drag to pull it (the force goes
into the env).

The overlay (`view_state.overlay_texts`, through `Handle.set_texts`): time,
episode, return, every reward term's current weighted value and episode sum,
termination flags, the commands, what P does, the keys.

`reload` (`--watch`) is called every `poll_s` seconds in a worker thread; it
returns a recompiled `ViewTask` when the task file changed (None when not) or
raises KsimError. A task that compiles and fits the policy replaces the running
one (a new episode); an error is shown in the overlay and printed, and the old
task keeps running. The runtime never compiles: the CLI passes the callback.

Without a display (`display_problem`): one line saying so and pointing at
`ksimdsl render`. On macOS MuJoCo's viewer needs `mjpython`.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import mujoco
import numpy as np

from ksimdsl.errors import KsimError
from ksimdsl.runtime.engine.model import load_model
from ksimdsl.runtime.tools.render import _camera
from ksimdsl.runtime.tools.view_session import Prepared, ViewSession, ViewTask
from ksimdsl.runtime.tools.view_state import KEY, SPEEDS, StepClock, ViewerControls, overlay_texts

__all__ = ["ViewConfig", "ViewStats", "run_viewer", "display_problem", "check_display", "NO_DISPLAY_HINT"]

NO_DISPLAY_HINT = "to see a policy without a screen, write a video: ksimdsl render TASK.ksim --run RUN_DIR -o out.mp4"
#: Longest wall-clock gap one frame catches up on (a longer stall, e.g. a compile, is skipped).
MAX_FRAME_S = 0.25

#: Keys of the viewer whose MuJoCo shortcut toggles a visualization flag: switched back at once.
_MUJOCO_TOGGLES = {
    KEY["q"]: mujoco.mjtVisFlag.mjVIS_CAMERA,
    KEY["e"]: mujoco.mjtVisFlag.mjVIS_CONSTRAINT,
    KEY["n"]: mujoco.mjtVisFlag.mjVIS_ISLAND,
    KEY["p"]: mujoco.mjtVisFlag.mjVIS_CONTACTSPLIT,
}


@dataclass(frozen=True)
class ViewConfig:
    """seconds: close the window after this long (None: when it is closed); deterministic: the policy's
    mode (else samples); push: a fixed push size instead of the task's push event; poll_s: --watch."""

    seconds: float | None = None
    deterministic: bool = True
    push: float | None = None
    seed: int = 0
    fps: float = 60.0
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        if self.seconds is not None and not self.seconds > 0:
            raise KsimError(f"--seconds must be positive, got {self.seconds}")
        if self.push is not None and not self.push >= 0:
            raise KsimError(f"--push must be at least 0, got {self.push}")


class ViewStats(NamedTuple):
    """What a viewing did: wall seconds, control steps, episodes started, tasks reloaded."""

    wall_s: float
    control_steps: int
    episodes: int
    reloads: int


# --------------------------------------------------------------------------- the display


def display_problem() -> str | None:
    """None when MuJoCo's viewer can open a window here, else why not (one line)."""
    if sys.platform == "darwin":
        import mujoco.viewer

        if not isinstance(getattr(mujoco.viewer, "_MJPYTHON", None), mujoco.viewer._MjPythonBase):
            return "on macOS MuJoCo's viewer runs only under mjpython: mjpython -m ksimdsl.cli view ..."
        return None
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "ksimdsl view opens a window, but there is no display (DISPLAY is not set)"
    try:
        import glfw
    except Exception as exc:  # ImportError, or OSError from a missing libglfw
        return f"ksimdsl view cannot load GLFW ({' '.join(str(exc).split())})"
    return _probe_window(glfw)


def _probe_window(glfw: Any) -> str | None:
    """Open and close a hidden GLFW window with an OpenGL context; why not, when that fails."""
    errors: list[str] = []

    def on_error(code: int, description: bytes | str) -> None:
        errors.append(description.decode(errors="replace") if isinstance(description, bytes) else str(description))

    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "the default display"
    glfw.set_error_callback(on_error)
    try:
        if not glfw.init():
            return f"ksimdsl view cannot open a window on {display} ({errors[-1] if errors else 'GLFW failed'})"
        try:
            glfw.window_hint(glfw.VISIBLE, glfw.FALSE)
            window = glfw.create_window(16, 16, "ksimdsl", None, None)
            if not window:
                why = errors[-1] if errors else "GLFW failed"
                return f"ksimdsl view cannot open an OpenGL window on {display} ({why})"
            glfw.destroy_window(window)
            glfw.default_window_hints()
        finally:
            glfw.terminate()
    finally:
        glfw.set_error_callback(None)
    return None


def check_display() -> None:
    """KsimError (one line, pointing at `ksimdsl render`) when no window can be opened."""
    problem = display_problem()
    if problem is not None:
        raise KsimError(f"{problem}; {NO_DISPLAY_HINT}")


# --------------------------------------------------------------------------- --watch


class _Watcher:
    """Calls `reload` every `poll_s` seconds in a worker thread and prepares what it returns there."""

    def __init__(self, reload: Callable[[], ViewTask | None], session: ViewSession, poll_s: float):
        self.reload, self.session, self.poll_s = reload, session, poll_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ksimdsl-view-watch")
        self._future: Future | None = None
        self._next = 0.0

    def poll(self, now: float) -> tuple[Prepared | None, str | None]:
        """(a task to swap in, an error message); both None while nothing new is ready."""
        if self._future is None:
            if now >= self._next:
                self._future = self._pool.submit(self._work)
            return None, None
        if not self._future.done():
            return None, None
        future, self._future = self._future, None
        self._next = now + self.poll_s
        try:
            return future.result(), None
        except KsimError as err:
            return None, err.format()
        except Exception as err:  # noqa: BLE001 - a bug while recompiling must not close the window
            return None, f"internal error while reloading: {type(err).__name__}: {err}"

    def _work(self) -> Prepared | None:
        task = self.reload()
        return None if task is None else self.session.prepare(task)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- the window


def _aim(cam: mujoco.MjvCamera, model: mujoco.MjModel) -> None:
    """The viewer's camera as `ksimdsl render`'s: tracking the root body, or the whole model."""
    wanted = _camera(model, None)
    cam.type, cam.trackbodyid, cam.fixedcamid = wanted.type, wanted.trackbodyid, wanted.fixedcamid
    cam.lookat[:] = wanted.lookat
    cam.distance, cam.azimuth, cam.elevation = wanted.distance, wanted.azimuth, wanted.elevation


def _perturbation(model: mujoco.MjModel, data: mujoco.MjData, pert: mujoco.MjvPerturb) -> np.ndarray:
    """The body forces of the mouse perturbation (Ctrl + right drag on a selected body), (nbody, 6)."""
    data.xfrc_applied[:] = 0.0
    if pert.active and pert.select > 0:
        mujoco.mjv_applyPerturbForce(model, data, pert)
    return data.xfrc_applied.copy()


def _texts(texts: list[tuple[str, str, str]]) -> list[tuple[Any, Any, str, str]]:
    """`overlay_texts` as `Handle.set_texts` takes them: (mjtFont, mjtGridPos, left, right)."""
    font = mujoco.mjtFont.mjFONT_NORMAL
    return [(font, getattr(mujoco.mjtGridPos, f"mjGRID_{corner}"), left, right) for corner, left, right in texts]


def run_viewer(
    task: ViewTask,
    policy: Any = None,
    config: ViewConfig = ViewConfig(),
    *,
    reload: Callable[[], ViewTask | None] | None = None,
    policy_label: str = "",
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> ViewStats:
    """Open MuJoCo's viewer on `task` stepped with `policy` until the window closes or `config.seconds` pass."""
    import mujoco.viewer

    check_display()
    session = ViewSession(
        task, policy, deterministic=config.deterministic, push=config.push, seed=config.seed, policy_label=policy_label
    )
    watcher = _Watcher(reload, session, config.poll_s) if reload is not None else None
    model = load_model(task.spec, task.model_path)
    data = mujoco.MjData(model)
    session.copy_to(model, data)
    controls = ViewerControls(task.controls)
    keys: queue.SimpleQueue[int] = queue.SimpleQueue()
    handle: list[Any] = []

    def on_key(key: int) -> None:  # on the viewer's UI thread: queue it, undo MuJoCo's own toggle
        keys.put(int(key))
        flag = _MUJOCO_TOGGLES.get(int(key))
        if flag is not None and handle:
            opt = handle[0].opt
            opt.flags[flag] = 1 - opt.flags[flag]

    before = set(threading.enumerate())
    viewer = mujoco.viewer.launch_passive(model, data, key_callback=on_key, show_left_ui=False, show_right_ui=False)
    # the thread running MuJoCo's window (`mujoco.viewer._launch_internal`; not on macOS, where mjpython runs it)
    ui_threads = [t for t in threading.enumerate() if t not in before and "_launch_internal" in t.name]
    handle.append(viewer)
    with viewer.lock():
        _aim(viewer.cam, model)
    ctrl_dt = float(task.spec.physics.ctrl_dt)
    clock = StepClock(ctrl_dt, max_steps=max(1, int(MAX_FRAME_S * SPEEDS[-1] / ctrl_dt)))
    frame_s = 1.0 / config.fps
    error, steps, episodes, reloads = "", 0, 1, 0
    start = last = time.monotonic()
    try:
        while viewer.is_running():
            now = time.monotonic()
            if config.seconds is not None and now - start >= config.seconds:
                break
            while not keys.empty():
                controls.on_key(keys.get(), session.command_values())
            if watcher is not None:
                prepared, problem = watcher.poll(now)
                if prepared is not None:
                    session.swap(prepared)
                    reloads, episodes, error = reloads + 1, episodes + 1, ""
                    controls.note = "task reloaded: a new episode"
                    log(f"ksimdsl view: reloaded {prepared.task.label}")
                if problem is not None:
                    error = problem
                    log(f"ksimdsl view: the edited task is not shown:\n{problem}")
            requests = controls.take_requests()
            if requests.reset:
                session.restart()
                episodes += 1
            for _ in range(requests.push):
                controls.note = "push: " + session.push()
            if controls.paused:
                clock.hold()
                n = requests.steps
            else:
                n = clock.due(min(now - last, MAX_FRAME_S), controls.speed)
            last = now
            with viewer.lock():
                forces = _perturbation(model, data, viewer.perturb)
            session.set_applied_forces(forces)
            for _ in range(n):
                out = session.step(controls.held)
                episodes += int(out.done_E[0])
            steps += n
            with viewer.lock():
                session.copy_to(model, data)
            viewer.set_texts(_texts(overlay_texts(session.readout(controls), controls, error=error)))
            viewer.sync()
            time.sleep(max(0.0, frame_s - (time.monotonic() - now)))
    finally:
        viewer.close()
        for thread in ui_threads:  # the window is torn down before the interpreter's exit handlers run
            thread.join(timeout=5.0)
        if watcher is not None:
            watcher.close()
        session.close()
    return ViewStats(time.monotonic() - start, steps, episodes, reloads)
