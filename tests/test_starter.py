"""`ksimdsl init`: a starter task for any MJCF model, which checks as written."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_compose import write_robot

from ksimdsl.cli import main
from ksimdsl.errors import KsimError
from ksimdsl.frontend.check import check_file
from ksimdsl.starter import StarterOptions, write_starter

REPO = Path(__file__).resolve().parents[1]


def test_a_bare_robot_gets_floor_imu_pose_feet_and_motors(tmp_path):
    xml = write_robot(tmp_path / "robot")
    out = tmp_path / "tasks" / "bot.ksim"
    text = write_starter(StarterOptions(model=str(xml), output=str(out)))
    assert out.read_text() == text
    assert 'model "../robot/bare.xml"' in text  # relative to the task file
    for line in ("    floor", '    imu imu at "imu_site"', '    collide only ["left_foot", "right_foot"] condim=3',
                 'actuators position joints="*" kp=40 kd=2'):
        assert line in text
    task = check_file(str(out))
    assert task.name == "bot" and task.model.nu == 4
    # the pose's height puts the feet on the floor: the lowest foot point (0.7 below the root, radius 0.03)
    assert task.model.composition.pose.base_height == pytest.approx(0.73, abs=1e-3)


def test_a_model_with_actuators_and_floor_keeps_them(tmp_path):
    out = tmp_path / "cp.ksim"
    write_starter(StarterOptions(model=str(REPO / "tasks" / "models" / "cartpole.xml"), output=str(out), name="cp"))
    text = out.read_text()
    assert "floor" not in text.split("physics")[0] and "actuators ctrl" in text
    assert check_file(str(out)).name == "cp"


def test_init_refuses_to_overwrite_and_reports_missing_models(tmp_path, capsys):
    out = tmp_path / "t.ksim"
    out.write_text("keep")
    with pytest.raises(KsimError, match="exists; pass --force"):
        write_starter(StarterOptions(model=str(REPO / "tasks" / "models" / "cartpole.xml"), output=str(out)))
    assert out.read_text() == "keep"
    assert main(["init", str(tmp_path / "nope.xml"), "-o", str(tmp_path / "n.ksim")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["init", str(REPO / "tasks" / "models" / "cartpole.xml"), "-o", str(out), "--force"]) == 0
    assert "it checks" in capsys.readouterr().out
