"""benchmarks/walk_protocol.py: the walking goals applied to eval reports, and its table.

The reports are `ksimdsl eval --json` lines written by hand, so each goal's
boundary is checked on both sides without training anything.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "walk_protocol.py"
_spec = importlib.util.spec_from_file_location("walk_protocol", SCRIPT)
walk_protocol = sys.modules["walk_protocol"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(walk_protocol)
Row, goal_failures, markdown_table = walk_protocol.Row, walk_protocol.goal_failures, walk_protocol.markdown_table


def report(vel, *, falls=0, episodes=16, level=0.0, **metrics):
    return {"command": {"vel": list(vel)}, "episodes": episodes, "falls": falls, "mean_return": 1.0,
            "mean_length": 500.0, "level": level, "metrics": metrics}  # fmt: skip


@pytest.mark.parametrize(
    "row, missed",
    [
        (Row(report([0.5, 0, 0], forward_speed=0.41, lateral_speed=0.1, yaw_rate=0.0), False), []),
        (Row(report([0.5, 0, 0], forward_speed=0.39, lateral_speed=0.0), False), ["forward 0.39 not within 20% of 0.5"]),
        (Row(report([1.0, 0, 0], forward_speed=1.19, lateral_speed=-0.16), False), ["|lateral| 0.16 >= 0.15"]),
        (Row(report([0.5, 0, 0], falls=1, forward_speed=0.5), False), ["falls 1 > 0"]),
        (Row(report([0.5, 0, 0], falls=2, forward_speed=0.5), True), []),  # pushes: 2 of 16 allowed
        (Row(report([0.5, 0, 0], falls=3, forward_speed=0.5), True), ["falls 3 > 2"]),
        (Row(report([0, 0, 0], forward_speed=-0.09, lateral_speed=0.0), False), []),
        (Row(report([0, 0, 0], forward_speed=0.12), False), ["|forward| 0.12 >= 0.1"]),
        (Row(report([0, 0, 0.5], forward_speed=0.05, yaw_rate=0.36), False), []),
        (Row(report([0, 0, 0.5], forward_speed=0.12, yaw_rate=0.5), False), []),  # standing still is for 0,0,0
        (Row(report([0, 0, 0.5], forward_speed=0.05, yaw_rate=0.34), False), ["yaw 0.34 not within 30% of 0.5"]),
        (Row(report([0.5, 0, 0], falls=1), False), ["falls 1 > 0"]),  # a task without metrics: falls only
    ],
)
def test_each_goal_is_met_or_missed_at_its_boundary(row, missed):
    assert goal_failures(row) == missed


def test_the_table_has_one_line_per_row_and_says_which_goals_were_missed():
    rows = [
        Row(report([0.5, 0, 0], forward_speed=0.45, lateral_speed=0.01, yaw_rate=-0.02), False),
        Row(report([0.5, 0, 0], falls=4, level=0.98, forward_speed=0.3, lateral_speed=0.0, yaw_rate=0.0), True),
    ]
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| command | events (level) | falls |")
    assert lines[2] == "| vel=0.5,0,0 | off | 0/16 | 0.450 | 0.010 | -0.020 | met |"
    assert lines[3] == (
        "| vel=0.5,0,0 | on (0.98) | 4/16 | 0.300 | 0.000 | 0.000 "
        "| missed: falls 4 > 2; forward 0.30 not within 20% of 0.5 |"
    )
    assert len(lines) == 4
