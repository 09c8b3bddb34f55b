"""`ksimdsl view` in a real window: MuJoCo's viewer on an X server without a screen (Xvfb).

Xvfb (Debian: `xvfb`) is started on a free display for the module (`-displayfd`),
`ksimdsl view` runs a trained cart-pole policy for a few seconds as a
subprocess (`MUJOCO_GL=glfw`), and screenshots of the X screen (`xwd -root`,
Debian: `x11-apps`) are taken while it runs: one must show the window (many
colours; the screen of an X server with no window is one flat colour). Skipped,
saying why, where Xvfb or xwd is missing; CI (.ci/run) installs both.
"""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: The same tiny training as test_cli.py's run, so the session's JAX cache compiles it once.
TINY_TRAIN = ("engine=mjx", "num_envs=8", "minibatches=2", "rollout=8", "epochs=1", "video=false")
VIEW_SECONDS = 6


def _missing_tools() -> str | None:
    missing = [tool for tool in ("Xvfb", "xwd") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian: apt-get install xvfb x11-apps; CI installs them)"
    return None


@pytest.fixture(scope="module")
def display():
    """An Xvfb server on a free display, e.g. ':3'; stopped at the end of the module."""
    missing = _missing_tools()
    if missing:
        pytest.skip(missing)
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 30)
        number = os.read(read_fd, 64).decode().strip() if ready else ""
        if not number.isdigit():
            pytest.skip(f"Xvfb did not start (exit status {server.poll()})")
        yield f":{number}"
    finally:
        os.close(read_fd)
        server.terminate()
        server.wait(timeout=10)


def screenshot(display: str) -> np.ndarray:
    """The whole X screen as (H, W, 3) uint8 RGB, read from `xwd -root` (its header is 25 big-endian uint32)."""
    raw = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True, check=True).stdout
    header = struct.unpack(">25I", raw[:100])
    header_size, width, height, byte_order = header[0], header[4], header[5], header[7]
    bits_per_pixel, bytes_per_line, ncolors = header[11], header[12], header[19]
    assert bits_per_pixel in (24, 32), f"expected a 24-bit true-colour screen, got {bits_per_pixel} bits per pixel"
    size = bits_per_pixel // 8
    start = header_size + 12 * ncolors
    rows = np.frombuffer(raw, np.uint8, count=bytes_per_line * height, offset=start).reshape(height, bytes_per_line)
    pixels = rows[:, : size * width].reshape(height, width, size)
    return pixels[..., [2, 1, 0]] if byte_order == 0 else pixels[..., size - 3 :]  # LSBFirst: B G R (x)


def shows_a_scene(shot: np.ndarray) -> bool:
    """Many colours and some of the screen lit: a rendered scene (the X screen alone is one colour)."""
    sample = shot[::2, ::2].astype(np.uint32)
    colours = np.unique((sample[..., 0] << 16) | (sample[..., 1] << 8) | sample[..., 2])
    return colours.size > 16 and (sample.max(axis=2) > 40).mean() > 0.03


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Two PPO iterations of tasks/cartpole.ksim, as `ksimdsl train` writes them."""
    if _missing_tools():
        pytest.skip(_missing_tools())
    run_dir = tmp_path_factory.mktemp("view") / "cartpole_run"
    result = subprocess.run(
        [sys.executable, "-m", "ksimdsl.cli", "train", "tasks/cartpole.ksim", *TINY_TRAIN, "steps=2",
         "--run-dir", str(run_dir), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_the_viewer_shows_a_trained_policy_in_a_window(display, trained_run):
    env = dict(os.environ, DISPLAY=display, MUJOCO_GL="glfw")
    env.pop("WAYLAND_DISPLAY", None)
    command = [sys.executable, "-m", "ksimdsl.cli", "view", "tasks/cartpole.ksim", "--run", str(trained_run),
               "--seconds", str(VIEW_SECONDS)]  # fmt: skip
    viewer = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shown = None
    try:
        deadline = time.monotonic() + 300
        while viewer.poll() is None and time.monotonic() < deadline:
            shot = screenshot(display)
            if shows_a_scene(shot):  # not the black screen, nor MuJoCo's "LOADING..." frame
                shown = shot
                break
            time.sleep(0.25)
        out, err = viewer.communicate(timeout=120)
    finally:
        if viewer.poll() is None:
            viewer.kill()
    assert viewer.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert shown is not None, f"no rendered scene appeared on {display} while ksimdsl view ran:\n{out}\n{err[-2000:]}"
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("viewed ") and " control steps" in summary, out
    steps = int(summary.split(": ")[1].split(" control steps")[0])
    assert steps > 10, out  # stepped in real time (cartpole: 100 control steps per second)
