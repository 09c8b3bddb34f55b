"""Where a model path as written in a task points.

* `models/robot.xml`: relative to the task file's directory (or absolute);
* `pkg:PACKAGE/rel/path.xml`: a file shipped inside an installed Python package,
  located without importing the package (e.g. the mjlab asset zoo:
  `pkg:mjlab/asset_zoo/robots/unitree_go1/xmls/go1.xml`);
* `menagerie:ROBOT/FILE.xml`: a MuJoCo Menagerie model. `$MENAGERIE_ROOT/ROBOT/FILE.xml`
  when MENAGERIE_ROOT is set (a Menagerie checkout), else the cache of the
  `mujoco-menagerie` package (`MENAGERIE_CACHE_DIR`). ksimdsl never downloads:
  a robot that is not cached yet is an error that says how to fetch it.

Meshes and other assets resolve relative to the model file itself, wherever it lies.
"""

from __future__ import annotations

import importlib.util
import os

from ksimdsl.errors import did_you_mean

__all__ = ["ModelLoadError", "resolve_model_path", "MENAGERIE_PACKAGE"]

MENAGERIE_PACKAGE = "mujoco_menagerie"


class ModelLoadError(Exception):
    """The model path does not resolve or MuJoCo cannot load it (message is user-facing)."""


def resolve_model_path(written: str, relative_to: str | None) -> str:
    """The absolute file path of a model path as written in a task.

    `relative_to` is the directory relative paths start from (None: the current
    directory). Raises ModelLoadError when the file does not exist.
    """
    if written.startswith("pkg:"):
        return _package_file(written)
    if written.startswith("menagerie:"):
        return _menagerie_file(written)
    path = written if os.path.isabs(written) else os.path.join(relative_to or os.getcwd(), written)
    if not os.path.isfile(path):
        where = "the current directory" if relative_to is None else "the task file's directory"
        raise ModelLoadError(f"model file '{written}' not found (relative paths start at {where})")
    return os.path.abspath(path)


def _package_file(written: str) -> str:
    rest = written[len("pkg:") :]
    package, _, rel = rest.partition("/")
    if not package or not rel:
        raise ModelLoadError(f"bad package model path '{written}'; write pkg:PACKAGE/path/inside/it.xml")
    if not package.isidentifier():
        # find_spec("a.b") imports the package `a` (its code runs): only a top-level name is looked up
        raise ModelLoadError(
            f"bad package name '{package}' in model path '{written}': write the top-level package "
            "(pkg:PACKAGE/sub/dir/model.xml), not a dotted module name"
        )
    try:
        spec = importlib.util.find_spec(package)  # a top-level name is located, never imported
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        hint = " (the mjlab asset zoo: pip install --no-deps mjlab==1.6.0)" if package == "mjlab" else ""
        raise ModelLoadError(f"no installed Python package '{package}' for model path '{written}'{hint}")
    for root in spec.submodule_search_locations:
        candidate = os.path.join(root, rel)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise ModelLoadError(f"model file '{rel}' not found in package '{package}'")


def _menagerie_file(written: str) -> str:
    rest = written[len("menagerie:") :]
    robot, _, rel = rest.partition("/")
    if not robot or not rel or not rel.endswith(".xml"):
        raise ModelLoadError(
            f"bad Menagerie model path '{written}'; write menagerie:ROBOT/FILE.xml (e.g. menagerie:unitree_go1/go1.xml)"
        )
    parts = rel.replace("\\", "/").split("/")
    if robot in (".", "..") or "\\" in robot or os.path.isabs(rel) or ".." in parts:
        raise ModelLoadError(f"bad Menagerie model path '{written}': the file must lie inside the robot's directory")
    root = os.environ.get("MENAGERIE_ROOT")
    if root:
        robot_dir = os.path.join(root, robot)
        if not os.path.isdir(robot_dir):
            try:
                known = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            except OSError:
                known = []
            raise ModelLoadError(f"no robot '{robot}' under MENAGERIE_ROOT={root}" + did_you_mean(robot, known))
        return _file_in(robot_dir, rel, robot, f"MENAGERIE_ROOT={root}")
    return _menagerie_cached(robot, rel)


def _menagerie_cached(robot: str, rel: str) -> str:
    prefetch = f"`mujoco-menagerie prefetch {robot}` (or python -m {MENAGERIE_PACKAGE} prefetch {robot})"
    try:
        found = importlib.util.find_spec(MENAGERIE_PACKAGE)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise ModelLoadError(
            f"menagerie:{robot}/{rel} needs MuJoCo Menagerie: set MENAGERIE_ROOT to a Menagerie checkout, "
            f"or `pip install mujoco-menagerie` and fetch the robot once while online with {prefetch}"
        )
    import mujoco_menagerie as mm  # the package's import does no I/O

    try:
        entry = mm.get(robot)
    except LookupError:
        raise ModelLoadError(f"MuJoCo Menagerie has no robot '{robot}'" + did_you_mean(robot, mm.names())) from None
    try:
        cache = mm.Cache()
        cached = cache.is_cached(entry)
        robot_dir = str(cache.model_path(entry))
    except Exception as exc:  # noqa: BLE001 - a broken cache is reported, never a traceback
        raise ModelLoadError(f"cannot read the MuJoCo Menagerie cache: {exc}") from None
    if not cached:
        raise ModelLoadError(
            f"Menagerie robot '{robot}' is not in the cache ({robot_dir}) and ksimdsl never downloads: "
            f"fetch it once while online with {prefetch}, or set MENAGERIE_ROOT to a Menagerie checkout"
        )
    return _file_in(robot_dir, rel, robot, f"the Menagerie cache ({robot_dir})")


def _file_in(robot_dir: str, rel: str, robot: str, where: str) -> str:
    path = os.path.join(robot_dir, rel)
    if os.path.isfile(path):
        return os.path.abspath(path)
    try:
        xmls = sorted(f for f in os.listdir(robot_dir) if f.endswith(".xml"))
    except OSError:
        xmls = []
    listing = f"; its XML files: {', '.join(xmls)}" if xmls else ""
    raise ModelLoadError(
        f"no file '{rel}' for Menagerie robot '{robot}' in {where}" + did_you_mean(rel, xmls) + listing
    )
