"""The `ksimdsl` command line.

    ksimdsl init    MODEL.xml|pkg:...|menagerie:ROBOT/FILE.xml -o TASK.ksim [--name NAME] [--force]
    ksimdsl check   TASK.ksim
    ksimdsl compile TASK.ksim [--backend jax|numba] [-o FILE] [--no-cse]
    ksimdsl train   TASK.ksim [key=value ...] [--run-dir DIR] | ksimdsl train --resume RUN_DIR
    ksimdsl eval    TASK.ksim --run RUN_DIR [--episodes N] [--command NAME=v1,v2,...]... [--seconds S]
                    [--no-events] [--level L|trained] [--json]
    ksimdsl render  TASK.ksim --run RUN_DIR -o OUT.mp4|OUT.gif [--seconds S] [--camera NAME] [--reference]
                    [--command NAME=v1,v2,...]... [--no-events]
    ksimdsl record  TASK.ksim --run RUN_DIR -o CLIP.npz [--seconds S] [--command NAME=v1,v2,...]...
                    [--no-events] [--engine ENGINE]
    ksimdsl view    TASK.ksim [--run RUN_DIR [--checkpoint N]] [--seconds S] [--stochastic] [--watch]
    ksimdsl export  TASK.ksim --run RUN_DIR -o POLICY.onnx
    ksimdsl plot    RUN_DIR [RUN_DIR ...] [-o DIR] [--x steps|minutes]
    ksimdsl bench   TASK.ksim [--envs N]
    ksimdsl lsp     [--stdio]   (language server for editors)

Exit status: 0 on success, 2 on a user error (printed as FILE:LINE:COL: error:
..., never with a traceback), 3 on an internal error (a bug in ksimdsl; the
traceback is shown so it can be reported), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import NoReturn, Sequence

from ksimdsl import __version__
from ksimdsl.errors import InternalCompilerError, KsimError
from ksimdsl.settings import ENGINES

EXIT_OK = 0
EXIT_USER = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with our exit status and no traceback."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"ksimdsl: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ksimdsl", description="Compile and train .ksim robot-learning tasks.")
    p.add_argument("--version", action="version", version=f"ksimdsl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    c = sub.add_parser("init", help="write a starter task for any MJCF model (checked before it is written)")
    c.add_argument("model", help="an MJCF file, pkg:PACKAGE/path.xml or menagerie:ROBOT/FILE.xml")
    c.add_argument("-o", "--output", required=True, help="the task file to write")
    c.add_argument("--name", default="", help="the task's name (default: the output file's name)")
    c.add_argument("--force", action="store_true", help="overwrite an existing file")

    c = sub.add_parser("check", help="parse and check a task against its model")
    c.add_argument("task", help="path to a .ksim file")

    c = sub.add_parser("compile", help="print (or write) the generated kernel module")
    c.add_argument("task")
    c.add_argument("--backend", choices=("jax", "numba"), default="jax")
    c.add_argument("-o", "--output", help="write the module to this file instead of stdout")
    c.add_argument("--no-cse", action="store_true", help="skip common-subexpression elimination")

    c = sub.add_parser("train", help="train a policy with PPO")
    c.add_argument("task", nargs="?", help="path to a .ksim file (omit with --resume)")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="override physics/engine/train/policy settings")
    c.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    c.add_argument("--run-dir", metavar="DIR", help="where to write the run (default runs/<task>/<timestamp>)")
    c.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    c.add_argument("--coordinator", metavar="HOST:PORT", help="multi-process training: address of process 0 (jax.distributed)")
    c.add_argument("--num-processes", type=int, metavar="P", help="number of processes of a multi-process run")
    c.add_argument("--process-id", type=int, metavar="I", help="index of this process, 0..P-1")

    c = sub.add_parser("eval", help="score the deterministic policy of a run")
    c.add_argument("task")
    c.add_argument("--run", required=True, metavar="RUN_DIR")
    c.add_argument("--episodes", type=int, default=10, help="episodes (envs) per evaluation, per --command")
    c.add_argument("--engine", choices=ENGINES, default=None)
    c.add_argument("--command", dest="commands", action="append", default=[], metavar="NAME=v1,v2,...",
                   help="hold command NAME at these values for whole episodes (repeat: one evaluation each)")
    c.add_argument("--seconds", type=float, help="episode limit in seconds (default: the task's episode)")
    c.add_argument("--no-events", action="store_true", help="switch every event (pushes) off")
    c.add_argument("--level", type=_level_arg, default=None, metavar="L|trained",
                   help="curriculum level in [0, 1] for every env (default: trained, the level the run reached)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true", help="print one JSON object (one line per --command)")

    c = sub.add_parser("render", help="render the deterministic policy of a run to a video")
    c.add_argument("task")
    c.add_argument("--run", required=True, metavar="RUN_DIR")
    c.add_argument("-o", "--output", required=True, metavar="OUT.mp4|OUT.gif")
    c.add_argument("--seconds", type=float, help="length of the video (default: one episode, at most 10 s)")
    c.add_argument("--camera", metavar="NAME", help="a camera of the model (default: track the root body)")
    c.add_argument("--width", type=int, default=640)
    c.add_argument("--height", type=int, default=480)
    c.add_argument("--engine", choices=ENGINES, default=None)
    c.add_argument("--command", dest="commands", action="append", default=[], metavar="NAME=v1,v2,...",
                   help="hold command NAME at these values for the whole video (repeat for other commands)")
    c.add_argument("--no-events", action="store_true", help="switch every event (pushes) off")
    c.add_argument("--reference", action="store_true",
                   help="show the task's reference clip at the same phase next to the policy (twice as wide)")

    c = sub.add_parser("record", help="record the deterministic policy of a run as a motion clip (.npz)")
    c.add_argument("task")
    c.add_argument("--run", required=True, metavar="RUN_DIR")
    c.add_argument("-o", "--output", required=True, metavar="CLIP.npz")
    c.add_argument("--seconds", type=float, help="length of the clip (default: one episode, at most 10 s)")
    c.add_argument("--command", dest="commands", action="append", default=[], metavar="NAME=v1,v2,...",
                   help="hold command NAME at these values (repeat for other commands)")
    c.add_argument("--no-events", action="store_true", help="switch every event (pushes) off")
    c.add_argument("--engine", choices=ENGINES, default=None)
    c.add_argument("--seed", type=int, default=0)

    c = sub.add_parser("view", help="watch and steer a policy live in MuJoCo's viewer (needs a display)")
    c.add_argument("task")
    c.add_argument("--run", metavar="RUN_DIR", help="the run whose policy acts (default: the zero action)")
    c.add_argument("--checkpoint", type=int, metavar="N", help="the run's checkpoint of iteration N (default: newest)")
    c.add_argument("--seconds", type=float, metavar="S", help="close the window after S seconds (default: when closed)")
    mode = c.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="stochastic", action="store_false", help="the policy's mode (default)")
    mode.add_argument("--stochastic", dest="stochastic", action="store_true", help="sample the policy's actions")
    c.set_defaults(stochastic=False)
    c.add_argument("--push", type=float, metavar="SIZE", help="P shoves by SIZE m/s instead of the task's push event")
    c.add_argument("--watch", action="store_true", help="recompile the task file when it changes and keep viewing")
    c.add_argument("--seed", type=int, default=0)

    c = sub.add_parser("export", help="export the deterministic actor of a run to ONNX")
    c.add_argument("task")
    c.add_argument("--run", required=True, metavar="RUN_DIR")
    c.add_argument("-o", "--output", required=True, metavar="POLICY.onnx")

    c = sub.add_parser("plot", help="training curves of one or more runs (PNG)")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR")
    c.add_argument("-o", "--output", metavar="DIR", help="default: RUN_DIR/plots for one run, ./plots for several")
    c.add_argument("--x", choices=("steps", "minutes"), default="steps", help="x axis: env steps or wall-clock minutes")

    c = sub.add_parser("bench", help="kernel, physics and env-step throughput of a task")
    c.add_argument("task")
    c.add_argument("--envs", type=int, default=1024)
    c.add_argument("--repeats", type=int, default=20)
    c.add_argument("--engine", choices=("mjx", "mujoco", "both"), default="both")
    c.add_argument("--json", metavar="FILE", help="also write the report as JSON")

    c = sub.add_parser("lsp", help="language server for editors (LSP over stdio)")
    c.add_argument("--stdio", action="store_true", help="serve over stdio (the default and only transport)")
    c.add_argument("--debounce-ms", type=float, default=200.0, help="wait this long after an edit before checking")
    c.add_argument("--log-file", help="write the server log here (default: stderr)")
    return p


# --------------------------------------------------------------------------- commands


def _cmd_init(args: argparse.Namespace) -> int:
    from ksimdsl.starter import StarterOptions, write_starter

    write_starter(StarterOptions(model=args.model, output=args.output, name=args.name, force=args.force))
    print(f"wrote {args.output} (it checks); next: ksimdsl train {args.output}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from ksimdsl.frontend.check import check_file

    task = check_file(args.task)
    n_obs = sum(1 for _ in task.obs_actor)
    print(f"{args.task}: ok (task '{task.name}', {n_obs} actor observations, {len(task.rewards)} reward terms)")
    return EXIT_OK


def _cmd_compile(args: argparse.Namespace) -> int:
    from ksimdsl.codegen import compile_task

    compiled = compile_task(args.task, backend=args.backend, cse=not args.no_cse)
    if args.output:
        out = Path(args.output)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(compiled.source)
        except OSError as e:
            raise KsimError(f"cannot write {out}: {e.strerror or e}") from None
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(compiled.source)
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from ksimdsl.session import resume_training, start_training

    if args.coordinator is not None or args.num_processes is not None or args.process_id is not None:
        # before anything asks JAX for its devices
        from ksimdsl.runtime.training.sharding import DistributedConfig, init_distributed

        dist = DistributedConfig.from_args(args.coordinator, args.num_processes, args.process_id)
        if dist is not None:
            init_distributed(dist)
    if args.resume:
        if args.task and args.task.endswith(".ksim"):
            raise KsimError("give either TASK.ksim or --resume RUN_DIR, not both")
        overrides = ([args.task] if args.task else []) + list(args.overrides)
        result = resume_training(args.resume, overrides=overrides, progress=not args.no_progress)
    else:
        if not args.task:
            raise KsimError("train needs a task file (ksimdsl train TASK.ksim) or --resume RUN_DIR")
        result = start_training(
            args.task, overrides=list(args.overrides), run_dir=args.run_dir, progress=not args.no_progress
        )
    print(f"{result.stop_reason}: {result.iterations} iterations, {result.env_steps:,} env steps in {result.wall_s:.0f} s; run directory {result.run_dir}")
    # stopped by Ctrl-C, SIGTERM or SIGHUP: checkpointed, but the job did not finish (the shell's 128 + SIGINT)
    return EXIT_INTERRUPTED if result.stop_reason == "interrupted" else EXIT_OK


def _level_arg(text: str) -> float | None:
    """`--level`: a number in [0, 1], or `trained` (None: the level the run reached)."""
    if text == "trained":
        return None
    try:
        level = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'trained', got {text!r}") from None
    if not 0.0 <= level <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'trained', got {text!r}")
    return level


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from ksimdsl.session import EvalRequest, evaluate_run

    request = EvalRequest(
        episodes=args.episodes, seed=args.seed, engine=args.engine, seconds=args.seconds,
        events=not args.no_events, commands=tuple(args.commands), level=args.level,
    )  # fmt: skip
    report = evaluate_run(args.task, args.run, request)
    for one in report if isinstance(report, list) else [report]:
        if args.json:
            print(json.dumps(one, sort_keys=True))
            continue
        for k, v in one.items():
            if k == "metrics":
                for name, mean in v.items():
                    print(f"{'metric/' + name:>16}: {mean}")
            else:
                print(f"{k:>16}: {v}")
        if isinstance(report, list):
            print()
    return EXIT_OK


def _cmd_render(args: argparse.Namespace) -> int:
    from ksimdsl.runtime.tools.render import VIDEO_SUFFIXES, check_output_path, render_run
    from ksimdsl.session import held_commands, task_for_run

    out = check_output_path(args.output, VIDEO_SUFFIXES)
    task = task_for_run(args.task, args.run, engine=args.engine)
    reference = None
    if args.reference:
        from ksimdsl.runtime.tools.render_reference import no_reference, reference_motion

        reference = reference_motion(task.reference)
        if reference is None:
            raise no_reference(task.spec)
    path = render_run(
        task.spec,
        task.kernels,
        model_path=task.model_path,
        run_dir=args.run,
        out_path=out,
        engine=task.engine,
        seconds=args.seconds,
        camera=args.camera,
        width=args.width,
        height=args.height,
        commands=held_commands(task, args.commands),
        events=not args.no_events,
        reference=reference,
    )
    print(f"wrote {path}")
    return EXIT_OK


def _cmd_record(args: argparse.Namespace) -> int:
    from ksimdsl.session import RecordRequest, record_run

    request = RecordRequest(
        seconds=args.seconds, engine=args.engine, events=not args.no_events, commands=tuple(args.commands),
        seed=args.seed,
    )  # fmt: skip
    path, info = record_run(args.task, args.run, args.output, request)
    ended = " (the episode ended there)" if info.ended_early else ""
    print(f"wrote {path}: {info.frames} frames, {info.seconds:.2f} s{ended}")
    return EXIT_OK


def _cmd_view(args: argparse.Namespace) -> int:
    from ksimdsl.runtime.tools.view import ViewConfig, check_display, run_viewer
    from ksimdsl.session import TaskFileWatcher, load_view, view_task

    if args.checkpoint is not None and args.run is None:
        raise KsimError("--checkpoint needs --run RUN_DIR")
    config = ViewConfig(seconds=args.seconds, deterministic=not args.stochastic, push=args.push, seed=args.seed)
    check_display()  # before compiling anything: without a display, one line and exit 2
    loaded, policy, label = load_view(args.task, args.run, iteration=args.checkpoint)
    reload = TaskFileWatcher(args.task, overrides=loaded.overrides) if args.watch else None
    print(f"ksimdsl view: {loaded.spec.task} with {label}; close the window to stop", flush=True)
    stats = run_viewer(view_task(loaded), policy, config, reload=reload, policy_label=label)
    reloads = f", {stats.reloads} reloads" if args.watch else ""
    print(f"viewed {stats.wall_s:.1f} s: {stats.control_steps} control steps, {stats.episodes} episodes{reloads}")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from ksimdsl.runtime.tools.export import check_output_path, export_onnx
    from ksimdsl.session import task_for_run

    out = check_output_path(args.output, (".onnx",))
    task = task_for_run(args.task, args.run, engine="mjx")
    print(f"wrote {export_onnx(task.spec, run_dir=args.run, out_path=out)}")
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace) -> int:
    from ksimdsl.runtime.tools.plots import plot_run, plot_runs

    if len(args.runs) == 1:
        paths = plot_run(args.runs[0], args.output, x=args.x)
    else:
        paths = plot_runs(args.runs, args.output or "plots", x=args.x)
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from ksimdsl.abi import TaskSpec
    from ksimdsl.codegen import compile_checked
    from ksimdsl.frontend.check import check_file
    from ksimdsl.runtime.tools.bench import BenchConfig, KernelVariant, bench_task, format_report

    if args.envs < 1 or args.repeats < 1:
        raise KsimError("--envs and --repeats must be at least 1")
    checked = check_file(args.task)
    variants = []
    for backend in ("jax", "numba"):
        for cse in (True, False):
            compiled = compile_checked(checked, backend=backend, cse=cse)
            variants.append(KernelVariant(f"{backend}/{'cse' if cse else 'no-cse'}", backend, cse, compiled.source))
    engines = ("mjx", "mujoco") if args.engine == "both" else (args.engine,)
    report = bench_task(
        TaskSpec.from_dict(compile_checked(checked, backend="jax").spec),
        model_path=checked.model.resolved_path,
        variants=variants,
        config=BenchConfig(envs=args.envs, repeats=args.repeats, engines=engines),
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(format_report(report))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        except OSError as e:
            raise KsimError(f"cannot write {args.json}: {e.strerror or e}") from None
    return EXIT_OK


def _cmd_lsp(args: argparse.Namespace) -> int:
    from ksimdsl.lsp import main as lsp_main

    argv = ["--debounce-ms", str(args.debounce_ms)] + (["--log-file", args.log_file] if args.log_file else [])
    return lsp_main(argv)


_COMMANDS = {
    "init": _cmd_init,
    "check": _cmd_check,
    "compile": _cmd_compile,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "render": _cmd_render,
    "record": _cmd_record,
    "view": _cmd_view,
    "export": _cmd_export,
    "plot": _cmd_plot,
    "bench": _cmd_bench,
    "lsp": _cmd_lsp,
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse argv; `key=value` overrides may also follow the options (`train T --run-dir D steps=10`).

    argparse stops collecting a `nargs="*"` positional at the first option and cannot
    intermix with subcommands, so overrides left over after the options are appended here.
    """
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [a for a in extra if a.startswith("-") or "=" not in a]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return _COMMANDS[args.command](args)
    except KsimError as err:
        print(err.format(), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("ksimdsl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InternalCompilerError as err:
        traceback.print_exc()
        print(f"ksimdsl: {err}\nThis is a bug in ksimdsl {__version__}, not in your task file.", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as err:  # noqa: BLE001 - last line of defence: a bug, reported as one
        traceback.print_exc()
        print(
            f"ksimdsl: internal error: {type(err).__name__}: {err}\n"
            f"This is a bug in ksimdsl {__version__}, not in your task file.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
