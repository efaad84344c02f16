"""The `accmon` command.

What every command needs is imported here; a command's own module is imported when it runs, where it would load
the store and the rules (check, run, attach's viewers, replay, export, demo: 40 to 120 ms each) or textual (the
app) for a command that does not use them: `accmon --help`, `ls` and `check` stay quick, and neither `check` nor
`ls` loads textual (tests/tui/test_cli.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from accmon.probe import __version__, registry
from accmon.probe.recording import RecordingError, RecordingReader
from accmon.probe.security import InsecureBindError, KeysError, check_bind
from accmon.probe.stop import StopOnError, parse_stop_on

from .importers import LogError, to_recording
from .keys import add_parser as add_keys_parser
from .keys import cmd_keys
from .remote import (
    RemoteError,
    cmd_attach_remote,
    cmd_attach_routed,
    cmd_ls_remote,
    entries_json,
    follow_runs,
    parse_target,
    print_entries,
)

EPILOG = """\
commands:
  accmon                       attach to the newest live run on this host (a picker when there are several)
  accmon ls                    list live runs: step, status, alerts, age
  accmon attach RUN|ENDPOINT   attach to a run (id, name, or its ipc:// / tcp:// PUB endpoint)
  accmon attach ssh://[user@]host[:port][/run]   attach to a run on another machine through ssh
  accmon attach ssh://h1 ssh://h2   one run whose ranks are on several machines (a multi-node job)
  accmon ls ssh://host [ssh://host2 ...]   list the live runs on other machines
  accmon keys                  CurveZMQ keys: binds beyond loopback that only your viewers can read
  accmon replay FILE           replay a recording
  accmon replay NEW --baseline GOOD   the charts draw GOOD's series dim under NEW's; the header says ahead/behind
  accmon run -- CMD...         run an unmodified training command with the probe injected
                               (--stop-on nan_loss: stop it gracefully on that alert; exit code 3)
  accmon check FILE [--json]   diagnose a recording headless (exit 1 when a warning or worse fired)
  accmon check NEW --baseline GOOD [--tolerance T]   exit 4 when NEW is worse than GOOD (a CI regression gate)
  accmon export FILE --csv OUT write a recording's series as CSV
  accmon demo                  a training demo with the live view
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accmon", description="Live training monitor: why is my accuracy zero, or stuck?",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"accmon {__version__}")
    p.add_argument("--ssh", metavar="[USER@]HOST[:PORT]", help="attach to (or `ls`) the runs on HOST through ssh")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    ls = sub.add_parser("ls", help="list live runs on this host, or on another through ssh")
    ls.add_argument("target", nargs="*", metavar="ssh://[user@]host[:port]", help="list the runs on those hosts")
    ls.add_argument("--json", action="store_true", help="one line of JSON: the registry entries")
    ls.add_argument("--follow", metavar="RUN", help=argparse.SUPPRESS)  # the remote side of attach over ssh
    # The remote side of a listing over ssh: only this host's ranks, not others' of a shared registry.
    ls.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    # With --json: each rank's step, status and alerts too (what `accmon ls ssh://host` and its picker show).
    ls.add_argument("--peek", action="store_true", help=argparse.SUPPRESS)
    ls.add_argument("--registry", metavar="DIR", help="list the entries in DIR (a registry shared by several hosts)")

    a = sub.add_parser("attach", help="attach to a live run")
    a.add_argument("target", nargs="*", help="run id or name (default: the newest), or the run's PUB endpoint, "
                                             "or ssh://host[/run] (several: one run's ranks on several hosts)")
    a.add_argument("--headless", action="store_true", help="no TUI: print alerts as lines, exit when the run ends")
    a.add_argument("--record", metavar="FILE", help="record every frame received (history first) to FILE")
    _on_alert_args(a)
    _baseline_args(a)

    r = sub.add_parser("replay", help="replay a recording")
    r.add_argument("file")
    _baseline_args(r)

    run = sub.add_parser("run", help="run a training command with the probe injected")
    run.add_argument("--headless", action="store_true", help="no TUI: the command's output and alerts on the terminal")
    run.add_argument("--record", metavar="FILE", help="record the run to FILE (.accmon)")
    run.add_argument("--name", help="run name (default: the script's name)")
    run.add_argument("--bind", metavar="ENDPOINT", help="also publish on tcp://HOST:PORT (needs `accmon keys`; see README)")
    _on_alert_args(run)
    _baseline_args(run)
    run.add_argument("--stop-on", metavar="IDS", help="stop the training gracefully at the next step when one of these "
                     "alerts fires: ids (nan_loss,lr_too_high) or a severity (critical: that or worse); exit code 3")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")

    c = sub.add_parser("check", help="diagnose a recording (exit 0 clean, 1 warning or worse, 2 unreadable, "
                                     "3 incomplete, 4 worse than --baseline)")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--baseline", metavar="FILE", help="compare with the recording of a run that worked: exit 4 when this "
                   "run is worse beyond --tolerance (best loss and accuracy, steps to the baseline's final accuracy, "
                   "a loss that diverged where the baseline's did not)")
    c.add_argument("--tolerance", metavar="T", action="append", default=[],
                   help="how much worse passes: T (default 0.05) is relative for the best loss and absolute for the best "
                   "accuracy; loss=T, acc=T, steps=T (steps: relative, default 0.25) set one each")

    e = sub.add_parser("export", help="export a recording's series")
    e.add_argument("file")
    e.add_argument("--csv", metavar="OUT", help="write the series as CSV")
    e.add_argument("--parquet", metavar="OUT", help="write the series as Parquet (needs pyarrow)")

    add_keys_parser(sub)

    d = sub.add_parser("demo", help="a training demo with the live view")
    d.add_argument("name", nargs="?", help="which demo (default: a healthy run); `accmon demo --list` lists them")
    d.add_argument("--list", action="store_true", help="list the demos")
    d.add_argument("--headless", action="store_true", help="print alerts instead of opening the TUI")
    return p


def _on_alert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-alert", metavar="CMD", help="run the shell command CMD for each new alert (the alert as JSON on "
                   "stdin; ACCMON_ALERT_ID, _SEVERITY, _STEP, _RANK, _MESSAGE and ACCMON_RUN_NAME in its environment)")
    p.add_argument("--on-alert-severity", choices=("info", "warning", "critical"), default="warning",
                   help="the least severe alert that runs CMD (default: warning)")


def _baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", metavar="FILE", help="a recording of a run that worked: every chart draws its series "
                   "dim under this run's, and the header says how far ahead or behind this run is")
    p.add_argument("--align", choices=("step", "epoch", "samples"), default="step",
                   help="with --baseline: compare at the same step (default), epoch, or number of samples seen (key b)")


def _viewer_options(args: argparse.Namespace, command: str) -> dict[str, Any] | None:
    """The TUI's --baseline and --align, the baseline read now: a file that cannot be used stops the command
    before anything starts (SystemExit 2, one line)."""
    path = getattr(args, "baseline", None)
    if not path:
        return {}
    from .baseline import BaselineError, load_baseline  # the store and the rules: only with --baseline

    try:
        baseline = load_baseline(path)
    except BaselineError as exc:
        sys.stderr.write(f"accmon {command}: {exc}\n")
        raise SystemExit(2) from None
    return {"baseline": baseline, "align": args.align}


def _alert_command(args: argparse.Namespace, run_name: str) -> Any:
    """The --on-alert command, or None."""
    if not getattr(args, "on_alert", None):
        return None
    from .on_alert import AlertCommand  # check's formatting, the store and the rules: only with --on-alert

    def say(line: str) -> None:
        sys.stderr.write(f"accmon: {line}\n")

    return AlertCommand(args.on_alert, min_severity=args.on_alert_severity, run_name=run_name, say=say)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except registry.RegistryError as exc:
        sys.stderr.write(f"accmon: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `accmon check run.accmon | head`: the reader left. Python would print a traceback at exit while
        # flushing stdout; point it at /dev/null instead and end as a process killed by SIGPIPE does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if args.ssh and cmd in (None, "ls", "attach"):
        try:
            host = parse_target(args.ssh)
        except RemoteError as exc:
            sys.stderr.write(f"accmon: {exc}\n")
            return 2
        run = (getattr(args, "target", None) or [None])[0] if cmd == "attach" else None
        args.target = [str(replace(host, run=run))]
    if cmd == "ls":
        if args.registry:
            os.environ[registry.ENV_REGISTRY] = args.registry  # this one invocation reads that registry
        return cmd_ls(args.target, as_json=args.json, follow=args.follow, here=args.here, peek=args.peek)
    if cmd == "keys":
        return cmd_keys(args)
    if cmd == "check":
        from .check import check  # the store, the rules and the baseline: this command's own

        return check(args.file, as_json=args.json, baseline=args.baseline, tolerance=args.tolerance)
    if cmd == "run":
        from .runner import run_command, run_name  # the launcher, the store: this command's own

        argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if args.bind:
            try:
                check_bind(args.bind)  # before the command starts: refused here, not inside the training process
            except (InsecureBindError, KeysError, ValueError) as exc:
                sys.stderr.write(f"accmon run: {exc}\n")
                return 2
        if args.stop_on is not None:
            try:
                if parse_stop_on(args.stop_on) is None:
                    raise StopOnError("--stop-on names no alert id or severity")
            except StopOnError as exc:
                sys.stderr.write(f"accmon run: {str(exc).replace('in stop_on', 'in --stop-on')}\n")
                return 2
        if not argv:
            return run_command(argv, headless=args.headless, record=args.record)  # says what is missing
        viewer = _viewer_options(args, "run")
        if viewer and args.headless:
            sys.stderr.write("accmon run: --baseline draws in the TUI; without it, compare the recording afterwards "
                             "with `accmon check FILE --baseline GOOD`\n")
        return run_command(argv, headless=args.headless, record=args.record, name=args.name, bind=args.bind,
                           on_alert=_alert_command(args, args.name or run_name(argv)), viewer=viewer,
                           stop_on=args.stop_on)
    if cmd == "attach":
        targets = args.target or [None]
        if len(targets) > 1 and not all(t.startswith("ssh://") for t in targets):
            sys.stderr.write("accmon attach: several targets must all be ssh://host (the hosts of one run)\n")
            return 2
        if args.on_alert and any(t and t.startswith("ssh://") for t in targets):
            sys.stderr.write("accmon attach: --on-alert works on this host's runs (run it with `accmon run` there, "
                             "or attach to a forwarded endpoint)\n")
            return 2
        viewer = _viewer_options(args, "attach")
        if viewer and args.headless:
            sys.stderr.write("accmon attach: --baseline draws in the TUI; with --headless --record FILE, compare "
                             "afterwards with `accmon check FILE --baseline GOOD`\n")
        return cmd_attach(targets if len(targets) > 1 else targets[0], headless=args.headless, record=args.record,
                          on_alert=_alert_command(args, targets[0] or ""), viewer=viewer)
    if cmd == "replay":
        return cmd_replay(args.file, viewer=_viewer_options(args, "replay"))
    if cmd == "export":
        return cmd_export(args)
    if cmd == "demo":
        from .demo import cmd_demo  # the launcher, as `run`

        return cmd_demo(args.name, list_only=args.list, headless=args.headless)
    target = getattr(args, "target", None)
    return cmd_attach(target[0] if isinstance(target, list) else target, headless=False, record=None)


def cmd_ls(target: str | list[str] | None = None, *, as_json: bool = False, follow: str | None = None,
           here: bool = False, peek: bool = False) -> int:
    """`accmon ls [ssh://host ...] [--json]`: this host's runs (and other hosts' in a shared $ACCMON_REGISTRY),
    or the runs on the hosts named."""
    if follow:
        return follow_runs(follow, sys.stdout)
    if target:
        return cmd_ls_remote(target, as_json=as_json)
    runs = registry.list_runs(here=here)
    from .app_sources import peek_runs  # the live engine's modules: only for a listing of this host

    if as_json:
        print(entries_json(runs, peek_runs(runs) if peek else None))
        return 0
    if not runs:
        print("no live runs on this host")
        return 0

    print_entries(runs, peek_runs(runs))  # step, status, alerts: at most PEEK_TIMEOUT_S for all runs together
    return 0


def resolve_target(target: str | None) -> list[registry.RunEntry]:
    """Registry entries for a run id/name, or a synthetic entry for an explicit endpoint."""
    if target and "://" in target:
        pub = target
        if pub.startswith("ipc://") and pub.endswith(".pub"):
            if not os.path.exists(pub[len("ipc://"):]):  # nothing would ever answer: say so, do not wait in silence
                raise SystemExit(f"accmon: no run socket at {pub[len('ipc://'):]} (see `accmon ls`)")
            ctl = pub[: -len(".pub")] + ".ctl"
        elif pub.startswith("tcp://"):
            host, _, port = pub.rpartition(":")
            if not port.isdigit() or not 0 < int(port) < 65535:
                raise SystemExit(f"accmon: {target!r}: the port is not a number between 1 and 65534 (use tcp://HOST:PORT)")
            ctl = f"{host}:{int(port) + 1}"
        else:
            raise SystemExit(f"accmon: cannot tell the control endpoint of {target!r} (give a run id, an ipc://….pub or tcp://HOST:PORT)")
        # pid 0: no process is known for an endpoint (it may be another host's, or a socket no registry entry
        # names), so the viewers tell whether the run is still there from its connection, not from a pid
        # (app_sources.rank_gone): RunEntry.alive() of pid 0 is False, and the viewer quit a second after attaching.
        return [registry.RunEntry(run_id="?", rank=0, name=target, host="?", pid=0, started=0.0, cmd=[], pub=pub, ctl=ctl)]
    return registry.find_run(target)


def live_run_ids() -> list[str]:
    """The ids of this host's live runs, newest first (each run once, whatever its number of ranks)."""
    ids: list[str] = []
    for e in registry.list_runs(here=True):
        if e.run_id not in ids:
            ids.append(e.run_id)
    return ids


def cmd_attach(target: str | list[str] | None, *, headless: bool, record: str | None, on_alert: Any = None,
               viewer: dict[str, Any] | None = None) -> int:
    """`accmon attach [RUN|ENDPOINT|ssh://host[/run] ...]`."""
    if isinstance(target, list) or target and target.startswith("ssh://"):
        return cmd_attach_remote(target, headless=headless, record=record, interactive=sys.stdout.isatty(),
                                 viewer=viewer)
    if target is None and not headless and not record and sys.stdout.isatty() and len(live_run_ids()) > 1:
        # Several live runs and none named: the picker the help promises, not silently the newest.
        from .app import run_picker  # textual: only when the TUI opens

        return run_picker(**(viewer or {}))
    entries = resolve_target(target)
    if not entries:
        which = f"matching {target!r} " if target else ""
        sys.stderr.write(f"accmon: no live run {which}on this host (see `accmon ls`; start one with `accmon run -- python train.py`)\n")
        return 1
    if not all(registry.is_local(e) for e in entries if e.host != "?"):
        # A shared $ACCMON_REGISTRY lists ranks of other hosts too: those are reached through ssh.
        return cmd_attach_routed(entries, headless=headless or bool(record and not sys.stdout.isatty()), record=record,
                                 interactive=sys.stdout.isatty(), viewer=viewer)
    if headless or record and not sys.stdout.isatty():
        from .headless import HeadlessViewer  # the live engine, the store and the rules: attach's own

        return HeadlessViewer(entries, record=record, on_alert=on_alert).run()
    from .app import run_live  # textual: only when the TUI opens

    return run_live(entries, record=record, on_alert=on_alert, **(viewer or {})) or 0


def cmd_replay(path: str, viewer: dict[str, Any] | None = None) -> int:
    try:
        RecordingReader(path)
    except RecordingError as not_a_recording:
        # A TensorBoard or CSVLogger log replays as the recording it converts to.
        converted = os.path.join(registry.runtime_dir(), f"replay-{os.getpid()}.accmon")
        try:
            if to_recording(path, converted) is None:
                sys.stderr.write(f"accmon replay: {not_a_recording}\n")
                return 2
        except LogError as exc:
            sys.stderr.write(f"accmon replay: {exc}\n")
            return 2
        try:
            return _replay(converted, viewer)
        finally:
            os.unlink(converted)
    return _replay(path, viewer)


def _replay(path: str, viewer: dict[str, Any] | None = None) -> int:
    from .app import run_replay  # textual: only when the TUI opens

    return run_replay(path, **(viewer or {})) or 0


def cmd_export(args: argparse.Namespace) -> int:
    if not (args.csv or args.parquet):
        sys.stderr.write("accmon export: say what to write: --csv OUT or --parquet OUT\n")
        return 2
    from .export import export_recording  # the store: this command's own

    return export_recording(args.file, csv=args.csv, parquet=args.parquet)


if __name__ == "__main__":
    sys.exit(main())
