"""Training-curve PNGs from metrics.jsonl: one run, overlaid runs, and bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from ksimdsl.errors import KsimError
from ksimdsl.runtime.tools import plots
from ksimdsl.runtime.training.runs import MetricsLog


def _write_run(path, *, iterations=12, rewards=("alive", "track"), terminations=("fell",), scale=1.0):
    path.mkdir(parents=True)
    with MetricsLog(path, tensorboard=False) as log:
        for i in range(1, iterations + 1):
            record = {
                "iteration": i,
                "env_steps": 100 * i,
                "wall_s": 0.5 * i,
                "sps": 200.0,
                # no episode finished in the first iteration: the runtime logs None
                "episode_return": None if i == 1 else scale * i,
                "episode_length": None if i == 1 else 10.0 + i,
                "reward": 0.1 * i,
                "level": 0.0,
                "loss": 1.0 / i,
                "entropy": 2.0 - 0.1 * i,
                "failure_rate": 0.5,
            }
            for r, name in enumerate(rewards):
                record[f"reward/{name}"] = 0.5 * r + 0.01 * i
                record[f"reward_raw/{name}"] = r + 0.02 * i
            for name in terminations:
                record[f"termination/{name}"] = 0.3
            log.write(record)
    return path


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_plot_run_writes_pngs_into_the_run_directory(tmp_path):
    run = _write_run(tmp_path / "walk" / "20260101-000000")
    written = plots.plot_run(run)
    assert {p.name for p in written} == {f"{name}.png" for name in plots.FIGURES}
    for path in written:
        assert path.parent == run / plots.PLOTS_DIR
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 200 and img.height > 100
            # not a blank canvas: lines and text leave many distinct colours
            assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 20


def test_one_panel_per_reward_term_and_termination(tmp_path):
    run = plots._Run("a", plots.load_run_metrics(_write_run(tmp_path / "r", rewards=("alive", "track", "height"))))
    figs = plots._figures([run], "steps")
    assert _titles(figs["rewards"]) == ["reward/alive", "reward/track", "reward/height"]
    assert _titles(figs["terminations"]) == ["termination/fell", "failure_rate"]
    assert _titles(figs["losses"]) == ["loss", "entropy"]  # only what the run logged
    # missing values (None before the first episode ends) are skipped, not plotted as zeros
    (line,) = figs["returns"].axes[0].get_lines()
    assert list(line.get_xdata()) == [100.0 * i for i in range(2, 13)]
    assert list(line.get_ydata()) == [float(i) for i in range(2, 13)]


def test_raw_reward_values_go_on_a_dashed_twin_axis(tmp_path):
    run = plots._Run("a", plots.load_run_metrics(_write_run(tmp_path / "r", rewards=("alive",))))
    fig = plots._figures([run], "steps")["rewards"]
    dashed = [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    np.testing.assert_allclose(dashed[0].get_ydata(), [0.02 * i for i in range(1, 13)])


def test_plot_runs_overlays_one_line_per_run(tmp_path):
    a = _write_run(tmp_path / "cartpole" / "run_a", scale=1.0)
    b = _write_run(tmp_path / "cartpole" / "run_b", scale=2.0, iterations=5)
    out = tmp_path / "compare"
    written = plots.plot_runs([a, b], out)
    assert {p.name for p in written} == {f"{name}.png" for name in plots.FIGURES}
    assert all(p.parent == out for p in written)

    runs = [plots._Run(label, plots.load_run_metrics(p)) for label, p in zip(plots._labels([a, b]), [a, b])]
    ax = plots._figures(runs, "steps")["returns"].axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["run_a", "run_b"]
    assert max(lines[1].get_ydata()) == 10.0  # run b: scale 2, 5 iterations


def test_wall_clock_x_axis_in_minutes(tmp_path):
    run = plots._Run("a", plots.load_run_metrics(_write_run(tmp_path / "r")))
    ax = plots._figures([run], "minutes")["returns"].axes[0]
    assert ax.get_xlabel() == "wall-clock minutes"
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [0.5 * i / 60.0 for i in range(2, 13)])
    with pytest.raises(KsimError, match="unknown x axis 'hours'"):
        plots.plot_runs([tmp_path / "r"], tmp_path / "out", x="hours")


def test_labels_disambiguate_runs_with_the_same_timestamp(tmp_path):
    a, b = tmp_path / "walk" / "20260101", tmp_path / "stand" / "20260101"
    assert plots._labels([a, b]) == ["walk/20260101", "stand/20260101"]


def test_missing_directory_is_one_line_error(tmp_path):
    with pytest.raises(KsimError, match="does not exist") as info:
        plots.plot_run(tmp_path / "nope")
    assert "\n" not in str(info.value)


def test_foreign_directory_is_rejected(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(KsimError, match="not a ksimdsl run directory"):
        plots.plot_runs([tmp_path / "photos"], tmp_path / "out")


def test_run_without_metrics_yet_is_rejected(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(KsimError, match="no metrics yet"):
        plots.plot_run(run)


def test_torn_last_line_is_ignored(tmp_path):
    run = _write_run(tmp_path / "run", iterations=3)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"iteration": 4, "env_steps": 400})[:10])  # killed mid-write
    assert len(plots.plot_run(run)) == len(plots.FIGURES)


def test_unwritable_output_directory_is_one_line_error(tmp_path):
    run = _write_run(tmp_path / "run")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KsimError, match="cannot write plots to"):
        plots.plot_runs([run], blocker / "plots")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(KsimError, match="cannot write"):
            plots.plot_runs([run], locked)


def test_running_mean_is_trailing_and_skips_nans():
    nan = float("nan")
    assert plots.running_mean([1.0, 2.0, 3.0, 4.0, nan, 6.0], 2) == [1.0, 1.5, 2.5, 3.5, 4.0, 6.0]
    assert plots.smoothing_window(60) == 1 and plots.smoothing_window(4000) == 80


def test_long_runs_draw_the_running_mean_over_faint_raw_values(tmp_path):
    run_dir = _write_run(tmp_path / "cartpole" / "long", iterations=300)
    runs = [plots._Run("long", plots.load_run_metrics(run_dir))]
    ax = plots._figures(runs, "steps")["returns"].axes[0]
    raw, smooth = ax.get_lines()[:2]
    assert raw.get_alpha() == 0.25 and smooth.get_label() == "long"
    ys = raw.get_ydata()
    window = plots.smoothing_window(len(ys))
    assert window == 5
    np.testing.assert_allclose(smooth.get_ydata()[-1], np.mean(ys[-window:]))
