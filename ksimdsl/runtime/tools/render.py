"""`ksimdsl render`: a video of the deterministic policy, rendered headless with MuJoCo.

    render_run(spec, kernels, model_path=..., run_dir=..., out_path="walk.mp4", engine="mjx")

Two stages, so the task's semantics come only from the runtime's own envs:

1. `record_rollout` steps ONE environment of the engine the kernels were
   compiled for (`engine=mjx` for JAX kernels, `mujoco` for numba kernels) with
   the policy's mode, auto-resetting like training does, and records the joint
   positions, episode time and running return after every control step (the
   shared loop `ksimdsl.runtime.engine.loop.Recording`);
2. `render_frames` writes each recorded `qpos` into an `MjData` of the task's
   model (`model.load_model`), runs `mj_forward` and renders it offscreen with
   a camera tracking the root body (the first free joint's body; a fixed view
   of the whole model when there is none; or a camera of the model by name),
   with MuJoCo's own overlay text: episode time, return so far, and the
   previous episode's return once one has ended.

With a `reference` (`ksimdsl render --reference`) each frame shows the
policy's state next to the reference clip's pose at the same phase
(`ksimdsl.runtime.tools.render_reference`), twice as wide.

Model fields the task randomizes (friction, masses, ...) do not change how a
frame looks, so frames use the default model. Frames are subsampled to at most
`max_fps` (30) per second of simulated time; the video plays in real time.

OpenGL: on Linux the renderer opens an EGL context (headless; Debian's Mesa
EGL works without a GPU) unless MUJOCO_GL names another backend (glfw, osmesa).
A machine without OpenGL gets a one-line KsimError saying what to install.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError, did_you_mean
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.engine.loop import Recorded, Recording
from ksimdsl.runtime.engine.model import load_model
from ksimdsl.runtime.engine.pins import MemPins
from ksimdsl.runtime.tools.export import check_output_path, load_run_policy

__all__ = [
    "RenderConfig",
    "Rollout",
    "Recorder",
    "record_rollout",
    "render_frames",
    "write_video",
    "render_policy",
    "render_run",
    "VIDEO_SUFFIXES",
    "gl_unavailable_reason",
    "MediaConfig",
    "TrainingMedia",
]

VIDEO_SUFFIXES = (".mp4", ".gif")
#: Default video length (seconds of simulated time) when neither --seconds nor a shorter episode limits it.
DEFAULT_SECONDS = 10.0


@dataclass(frozen=True)
class RenderConfig:
    """How a video looks. `seconds` None: one episode, at most DEFAULT_SECONDS; `camera` None: track the root.

    Frames are taken every `frame_stride` control steps so that at most `max_fps`
    frames show one second of simulated time.
    """

    width: int = 640
    height: int = 480
    seconds: float | None = None
    camera: str | None = None
    max_fps: float = 30.0
    seed: int = 0
    shadows: bool = True  # shadows and reflections: ~6x slower on a CPU (Mesa llvmpipe)

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise KsimError(f"render size must be even and at least 16x16, got {self.width}x{self.height}")
        if self.seconds is not None and not self.seconds > 0:
            raise KsimError(f"--seconds must be positive, got {self.seconds}")
        if not self.max_fps > 0:
            raise KsimError(f"max_fps must be positive, got {self.max_fps}")

    def control_steps(self, spec: TaskSpec) -> int:
        """Control steps to simulate."""
        ctrl_dt = float(spec.physics.ctrl_dt)
        seconds = self.seconds if self.seconds is not None else min(DEFAULT_SECONDS, spec.episode_steps * ctrl_dt)
        return max(1, round(seconds / ctrl_dt))

    def frame_stride(self, spec: TaskSpec) -> int:
        """Control steps per video frame."""
        return max(1, math.ceil(1.0 / (float(spec.physics.ctrl_dt) * self.max_fps)))


class Rollout(NamedTuple):
    """One env's trajectory, T = control steps + 1 (the reset state first).

    qpos_TQ: joint positions after each step (after the auto-reset where an episode ended);
    time_T: episode time (s); return_T: the episode's return so far;
    last_return_T: return of the most recent finished episode (NaN before the first ends);
    episode_T: index of the episode being shown (0-based);
    mem_TM: the kernel memory of each state (the reference's start phase, ...), None if not recorded.
    """

    qpos_TQ: np.ndarray
    time_T: np.ndarray
    return_T: np.ndarray
    last_return_T: np.ndarray
    episode_T: np.ndarray
    mem_TM: np.ndarray | None = None


# --------------------------------------------------------------------------- stage 1: the rollout


def _rollout_from_steps(spec: TaskSpec, recorded: Recorded) -> Rollout:
    """Assemble a Rollout from per-step records (index 0: the reset state, done/final_return unused there)."""
    qpos_TQ, step_T, return_T = recorded.qpos_TQ, recorded.step_T, recorded.return_T
    final_return_T = recorded.final_return_T
    done_T = np.asarray(recorded.done_T, bool)
    episode_T = np.cumsum(done_T).astype(np.int64)
    last_T = np.full(len(done_T), np.nan, np.float32)
    last = np.nan
    for t in range(len(done_T)):
        if done_T[t]:
            last = float(final_return_T[t])
        last_T[t] = last
    return Rollout(
        qpos_TQ=np.asarray(qpos_TQ, np.float64),
        time_T=np.asarray(step_T, np.float64) * float(spec.physics.ctrl_dt),
        return_T=np.asarray(return_T, np.float32),
        last_return_T=last_T,
        episode_T=episode_T,
        mem_TM=np.asarray(recorded.mem_TM),
    )


class Recorder:
    """Steps one env of `engine` with a policy's mode; reusable (the jitted rollout compiles once).

    recorder = Recorder(spec, kernels, model_path=..., engine="mjx", steps=500)
    rollout = recorder.record(policy, seed=0)
    """

    def __init__(
        self,
        spec: TaskSpec,
        kernels: ModuleType,
        *,
        model_path: str | Path,
        engine: str,
        steps: int,
        pins: MemPins | None = None,
    ):
        self.spec, self.engine, self.steps = spec, engine, int(steps)
        self._recording = Recording(engines.get(engine), spec, kernels, model_path, steps=self.steps, pins=pins)

    def record(self, policy: ppo.Policy, *, seed: int = 0) -> Rollout:
        return _rollout_from_steps(self.spec, self._recording.record(policy, seed=seed))


def record_rollout(
    spec: TaskSpec,
    kernels: ModuleType,
    policy: ppo.Policy,
    *,
    model_path: str | Path,
    engine: str,
    steps: int,
    seed: int = 0,
    pins: MemPins | None = None,
) -> Rollout:
    """Run `policy` (deterministic) for `steps` control steps in one env of `engine` ("mjx" | "mujoco"),
    with `pins` (commands held, events off: `ksimdsl.runtime.engine.pins`) if given."""
    recorder = Recorder(spec, kernels, model_path=model_path, engine=engine, steps=steps, pins=pins)
    return recorder.record(policy, seed=seed)


# --------------------------------------------------------------------------- stage 2: frames


def _gl_context_class() -> Any:
    """The GLContext class to render with: EGL on Linux unless MUJOCO_GL names another backend."""
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if sys.platform.startswith("linux") and backend in ("", "egl"):
        from mujoco.egl import GLContext

        return GLContext
    if backend == "osmesa":
        from mujoco.osmesa import GLContext

        return GLContext
    return mujoco.gl_context.GLContext


def _no_gl(exc: BaseException) -> KsimError:
    backend = os.environ.get("MUJOCO_GL") or ("egl" if sys.platform.startswith("linux") else "default")
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return KsimError(
        f"cannot open an OpenGL context for offscreen rendering (MUJOCO_GL={backend}: {detail}); "
        "on a headless Linux machine install libegl1 libegl-mesa0 libgl1-mesa-dri"
    )


class _Offscreen:
    """An offscreen MuJoCo scene of `model` at width x height: render(data, camera, overlay) -> (H, W, 3) uint8."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int, *, shadows: bool = True):
        self.model = model
        self.width, self.height = width, height
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        try:
            self._gl = _gl_context_class()(width, height)
            self._gl.make_current()
        except Exception as exc:  # ImportError, RuntimeError, OpenGL errors: all mean "no GL here"
            raise _no_gl(exc) from None
        scales = mujoco.mjtFontScale
        small, medium, large = scales.mjFONTSCALE_50, scales.mjFONTSCALE_100, scales.mjFONTSCALE_150
        font = small if height < 200 else medium if height < 360 else large
        self._scene = mujoco.MjvScene(model, maxgeom=10000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(shadows)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(shadows)
        self._option = mujoco.MjvOption()
        self._context = mujoco.MjrContext(model, font.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._context)
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._pixels = np.zeros((height, width, 3), np.uint8)

    def render(self, data: mujoco.MjData, camera: mujoco.MjvCamera, overlay: tuple[str, str] | None) -> np.ndarray:
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self.model, data, self._option, None, camera, mujoco.mjtCatBit.mjCAT_ALL.value, self._scene
        )
        mujoco.mjr_render(self._rect, self._scene, self._context)
        if overlay is not None:
            mujoco.mjr_overlay(
                mujoco.mjtFont.mjFONT_NORMAL.value,
                mujoco.mjtGridPos.mjGRID_TOPLEFT.value,
                self._rect,
                overlay[0],
                overlay[1],
                self._context,
            )
        mujoco.mjr_readPixels(self._pixels, None, self._rect, self._context)
        return np.flipud(self._pixels).copy()

    def close(self) -> None:
        self._context.free()
        self._gl.free()

    def __enter__(self) -> "_Offscreen":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gl_unavailable_reason() -> str | None:
    """None when an offscreen OpenGL context opens here, else why not (one line)."""
    try:
        with _Offscreen(mujoco.MjModel.from_xml_string("<mujoco/>"), 16, 16):
            return None
    except KsimError as err:
        return str(err)


def _camera(model: mujoco.MjModel, name: str | None) -> mujoco.MjvCamera:
    """A named model camera, else a camera tracking the first free joint's body, else a view of the whole model."""
    cam = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, cam)
    if name is not None:
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam_id < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            known = ", ".join(n for n in names if n) or "none"
            hint = did_you_mean(name, [n for n in names if n])
            raise KsimError(f"the model has no camera '{name}'{hint} (cameras: {known})")
        cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        cam.fixedcamid = cam_id
        return cam
    free = np.flatnonzero(np.asarray(model.jnt_type) == mujoco.mjtJoint.mjJNT_FREE)
    if free.size:
        cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        cam.trackbodyid = int(model.jnt_bodyid[free[0]])
        cam.distance = 4.0
        cam.elevation = -15.0
        cam.azimuth = 135.0
    else:
        cam.elevation = -10.0
    return cam


def _overlay(rollout: Rollout, t: int) -> tuple[str, str]:
    titles = ["time", "return"]
    values = [f"{rollout.time_T[t]:.2f} s", f"{rollout.return_T[t]:.2f}"]
    if not math.isnan(rollout.last_return_T[t]):
        titles += ["episode", "last return"]
        values += [str(int(rollout.episode_T[t]) + 1), f"{rollout.last_return_T[t]:.2f}"]
    return "\n".join(titles), "\n".join(values)


#: overlay(t, (titles, values) of the usual text) -> the (titles, values) frame t shows
Overlay = Callable[[int, tuple[str, str]], tuple[str, str]]


def render_frames(
    spec: TaskSpec, model_path: str | Path, rollout: Rollout, config: RenderConfig, *, overlay: bool | Overlay = True
) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of every `config.frame_stride(spec)`-th state of `rollout`; `overlay`
    False: no text, a function: the text it makes of state t and its usual text."""
    model = load_model(spec, model_path)
    camera = _camera(model, config.camera)
    data = mujoco.MjData(model)
    stride = config.frame_stride(spec)
    frames = []
    with _Offscreen(model, config.width, config.height, shadows=config.shadows) as screen:
        for t in range(0, len(rollout.qpos_TQ), stride):
            data.qpos[:] = rollout.qpos_TQ[t]
            mujoco.mj_forward(model, data)
            text = _overlay(rollout, t) if overlay else None
            if callable(overlay):
                text = overlay(t, text)
            frames.append(screen.render(data, camera, text))
    return np.stack(frames)


# --------------------------------------------------------------------------- output


def write_video(frames_FHWC: np.ndarray, out_path: str | Path, *, fps: float) -> Path:
    """Write frames as .mp4 (H.264 via imageio-ffmpeg) or .gif (looping), atomically."""
    import imageio.v2 as imageio

    path = Path(out_path)
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")
    if suffix not in VIDEO_SUFFIXES:
        raise KsimError(f"output {path} must end in {' or '.join(VIDEO_SUFFIXES)}")
    try:
        with warnings.catch_warnings():
            # imageio-ffmpeg starts ffmpeg through subprocess (fork + exec at once), which is safe
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            if suffix == ".gif":
                imageio.mimwrite(tmp, list(frames_FHWC), format="GIF", duration=1000.0 / fps, loop=0)
            else:
                imageio.mimwrite(
                    tmp, list(frames_FHWC), format="FFMPEG", fps=fps, codec="libx264", quality=7, macro_block_size=2
                )
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KsimError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def render_policy(
    spec: TaskSpec,
    kernels: ModuleType,
    policy: ppo.Policy,
    *,
    model_path: str | Path,
    out_path: str | Path,
    engine: str,
    config: RenderConfig = RenderConfig(),
    pins: MemPins | None = None,
    reference: Any = None,
) -> Path:
    """Record and render `policy` (see the module docstring) to `out_path` (.mp4 or .gif); `pins` hold
    commands fixed or switch events off (`ksimdsl render --command / --no-events`); a `reference`
    (`render_reference.ReferenceMotion`) is shown next to the policy."""
    path = check_output_path(out_path, VIDEO_SUFFIXES)
    steps = config.control_steps(spec)
    rollout = record_rollout(
        spec, kernels, policy, model_path=model_path, engine=engine, steps=steps, seed=config.seed, pins=pins
    )
    if reference is None:
        frames = render_frames(spec, model_path, rollout, config)
    else:
        from ksimdsl.runtime.tools.render_reference import side_by_side

        frames = side_by_side(spec, model_path, rollout, reference, config)
    fps = 1.0 / (float(spec.physics.ctrl_dt) * config.frame_stride(spec))
    return write_video(frames, path, fps=fps)


def render_run(
    spec: TaskSpec,
    kernels: ModuleType,
    *,
    model_path: str | Path,
    run_dir: str | Path,
    out_path: str | Path,
    engine: str,
    seconds: float | None = None,
    camera: str | None = None,
    width: int = 640,
    height: int = 480,
    commands: Mapping[str, Sequence[float]] | None = None,
    events: bool = True,
    reference: Any = None,
) -> Path:
    """`ksimdsl render`: the deterministic policy of `run_dir`'s newest checkpoint as a video, with
    `commands` held at their values for the whole video and events off unless `events`; with a
    `reference` (`render_reference.ReferenceMotion`), next to the reference clip at the same phase."""
    config = RenderConfig(width=width, height=height, seconds=seconds, camera=camera)
    path = check_output_path(out_path, VIDEO_SUFFIXES)
    _camera(load_model(spec, model_path), camera)  # an unknown camera fails before the rollout
    pins = MemPins.build(spec, [dict(commands or {})], events=events) if commands or not events else None
    policy, _ = load_run_policy(spec, run_dir)
    return render_policy(
        spec, kernels, policy, model_path=model_path, out_path=path, engine=engine, config=config, pins=pins,
        reference=reference,
    )  # fmt: skip


# --------------------------------------------------------------------------- during training


@dataclass(frozen=True)
class MediaConfig:
    """Videos and plots a training run writes into its directory.

    every_s: wall-clock seconds between two writes (0: only at the end);
    video / plots: what to write; the video is `video_seconds` of the current
    deterministic policy at width x height, without shadows (fast on a CPU).
    """

    every_s: float = 600.0
    video: bool = True
    plots: bool = True
    video_seconds: float = 5.0
    width: int = 320
    height: int = 240


class TrainingMedia:
    """Writes RUN_DIR/videos/iter_<iteration>.mp4 and RUN_DIR/plots/*.png while a run trains.

    The training loop calls `maybe_write(ppo_state, iteration=i)` after each
    iteration (cheap when nothing is due) and `maybe_write(..., final=True)` once
    at the end. The rollout compiles once and is reused. A failure to render
    (e.g. no OpenGL) is reported once and turns videos off; it never stops training.
    """

    VIDEO_DIR = "videos"

    def __init__(
        self,
        spec: TaskSpec,
        kernels: ModuleType,
        *,
        model_path: str | Path,
        run_dir: str | Path,
        engine: str,
        config: MediaConfig = MediaConfig(),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.spec, self.kernels, self.model_path = spec, kernels, model_path
        self.run_dir, self.engine, self.config = Path(run_dir), engine, config
        self.render_config = RenderConfig(
            width=config.width, height=config.height, seconds=config.video_seconds, shadows=False
        )
        self._clock = clock
        self._last = self._clock()
        self._recorder: Recorder | None = None
        self._video_ok = config.video

    def due(self) -> bool:
        return self.config.every_s > 0 and self._clock() - self._last >= self.config.every_s

    def maybe_write(self, ppo_state: ppo.PPOState, *, iteration: int, final: bool = False) -> list[Path]:
        """Write a video and the plots if `final` or `every_s` has passed; returns what was written."""
        if not (final or self.due()):
            return []
        self._last = self._clock()
        written: list[Path] = []
        if self._video_ok:
            try:
                written.append(self._video(ppo.make_policy(ppo_state), iteration))
            except KsimError as err:
                self._video_ok = False
                print(f"ksimdsl: no training videos: {err}", file=sys.stderr, flush=True)
        if self.config.plots:
            from ksimdsl.runtime.tools.plots import plot_run

            try:
                written += plot_run(self.run_dir)
            except KsimError as err:  # e.g. no metrics yet
                print(f"ksimdsl: no plots: {err}", file=sys.stderr, flush=True)
        return written

    def _video(self, policy: ppo.Policy, iteration: int) -> Path:
        cfg = self.render_config
        if self._recorder is None:
            self._recorder = Recorder(
                self.spec,
                self.kernels,
                model_path=self.model_path,
                engine=self.engine,
                steps=cfg.control_steps(self.spec),
            )
        rollout = self._recorder.record(policy, seed=cfg.seed)
        frames = render_frames(self.spec, self.model_path, rollout, cfg)
        out = self.run_dir / self.VIDEO_DIR / f"iter_{iteration:08d}.mp4"
        check_output_path(out, VIDEO_SUFFIXES)
        fps = 1.0 / (float(self.spec.physics.ctrl_dt) * cfg.frame_stride(self.spec))
        return write_video(frames, out, fps=fps)
