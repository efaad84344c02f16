"""`accmon run [--headless] [--record FILE] -- CMD...`: run an unmodified training command with the probe injected.

The probe goes in through PYTHONPATH (probe/inject/sitecustomize.py) and starts when the script imports a
framework. This process watches: headless, it prints alerts as they come; otherwise it opens the TUI. When
the command ends, the recording gets an `exit` frame with its exit code — the one thing the training process
cannot write about itself when it is killed. The exit code of `accmon run` is the command's, except 3
(EXIT_STOPPED) when `--stop-on` stopped the run (the ranks leave a note in the runtime directory).

The command's processes find their run id themselves (registry.run_id_from_env): under a multi-node torchrun
it is the job's, the same on every node, which this process cannot know beforehand. So it hands them a
launch token instead (`$ACCMON_LAUNCH`, the run id when nothing else decides), and watches the entries of
this host that carry it. With `--record F` on each node, each node's F holds that node's ranks.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from accmon.probe import registry, wire
from accmon.probe.autorun import ENV_AUTO
from accmon.probe.iothread import stop_note_path
from accmon.probe.recording import RecordingError, RecordingReader, RecordingWriter, merge_recordings
from accmon.probe.run import ENV_BIND, ENV_NAME, ENV_RECORD
from accmon.probe.stop import ENV_STOP_ON

from .app_sources import LiveSource
from .headless import HeadlessViewer, say_recorded
from .on_alert import AlertCommand
from .store import clean_stop, stop_words

INJECT_DIR = os.path.join(os.path.dirname(os.path.abspath(registry.__file__)), "inject")


# `accmon run`'s exit code when --stop-on stopped the run (whatever the script's own code after it saved): no
# other path of `accmon run` gives it (2 is a bad command line, 127 a command not found, 128+N a signal).
EXIT_STOPPED = 3


def child_env(launch: str, record: str | None, name: str | None, bind: str | None,
              stop_on: str | None = None) -> dict[str, str]:
    """The command's environment: the probe injected, and this launch's token. A `$ACCMON_RUN_ID` of the
    user's own is passed on: it names the run (the same value on every node joins their ranks)."""
    env = dict(os.environ)
    env.pop(ENV_STOP_ON, None)  # only this launch's --stop-on, never one inherited from an outer `accmon run`
    if stop_on:
        env[ENV_STOP_ON] = stop_on
    env[ENV_AUTO] = "1"
    env[registry.ENV_LAUNCH] = launch
    env["PYTHONPATH"] = os.pathsep.join(p for p in (INJECT_DIR, env.get("PYTHONPATH", "")) if p)
    if record:
        env[ENV_RECORD] = os.path.abspath(record)
    if name:
        env[ENV_NAME] = name
    if bind:
        env[ENV_BIND] = bind
    return env


def run_name(cmd: Sequence[str]) -> str:
    """The script's name (`python train.py --lr 3` → train), a module's (`python -m pkg.train` → pkg.train)."""
    for i, arg in enumerate(cmd):
        if arg.endswith(".py"):
            return os.path.splitext(os.path.basename(arg))[0]
        if arg == "-m" and i + 1 < len(cmd):
            return cmd[i + 1]
    return os.path.basename(cmd[0])


def launched(launch: str) -> list[registry.RunEntry]:
    """The entries of this host that the command of launch token `launch` registered (newest run first)."""
    mine = [e for e in registry.list_runs(here=True) if e.extra.get("launch") == launch]
    if not mine:
        return []
    newest = max(mine, key=lambda e: e.started).run_id  # a torchrun restart registers a new run
    return sorted((e for e in mine if e.run_id == newest), key=lambda e: e.rank)


def wait_for_entries(launch: str, proc: subprocess.Popen, poll: float = 0.05) -> list[registry.RunEntry]:
    """The run's registry entries once it has registered; [] if the process ended first."""
    while True:
        entries = launched(launch)
        if entries:
            return entries
        if proc.poll() is not None:
            return []
        time.sleep(poll)


def rank_files(record: str) -> list[str]:
    """The per-rank recordings a multi-rank run writes beside `record` (see run._rank_path)."""
    root, ext = os.path.splitext(record)
    return sorted(glob.glob(glob.escape(root) + ".rank*" + (ext or ".accmon")))


def finish_recording(record: str, returncode: int, heard: dict[int, float] | None = None) -> None:
    """Note the exit in the recording(s); merge a multi-rank run's per-rank files into `record`."""
    parts = rank_files(record)
    if parts and os.path.exists(record):
        # A launcher that starts rank 0 before the others exist (Lightning's own DDP) leaves rank 0 thinking it
        # is alone: it recorded under the plain name. It is one more part, never something to overwrite.
        plain = record + ".rank-unknown"
        os.replace(record, plain)
        parts.append(plain)
    append_exit(parts or ([record] if os.path.exists(record) else []), returncode, heard)
    if parts:
        try:
            merge_recordings(parts, record)
        except (RecordingError, OSError) as exc:
            sys.stderr.write(f"accmon: could not merge {len(parts)} rank recordings into {record}: {exc}; they are kept as they are\n")
            return
        for p in parts:
            os.unlink(p)


def append_exit(paths: list[str], returncode: int, heard: dict[int, float] | None = None) -> None:
    """Append the `exit` frame (exit code or signal) after each file's last frame; with `heard`, when a viewer
    last heard from that file's rank (`last_heard`)."""
    for path in paths:
        try:
            reader = RecordingReader(path)
            last: dict | None = None
            for frame in reader.frames():
                last = frame
            if last is None:
                continue
            sig = signal.Signals(-returncode).name if returncode < 0 else None
            frame = wire.envelope("exit", last["run"], last["rank"], last["seq"] + 1, last["step"],
                                  exit_code=None if sig else returncode, signal=sig)
            if heard and last["rank"] in heard:
                frame["last_heard"] = heard[last["rank"]]
            writer = RecordingWriter(path, append=True)
            writer.write([wire.encode(frame)])
            writer.close()
        except (RecordingError, OSError) as exc:
            sys.stderr.write(f"accmon: could not note the exit in {path}: {exc}\n")


def _die_with(parent: int) -> Callable[[], None] | None:
    """A preexec_fn: the command gets SIGTERM when this process dies, however it dies (a SIGKILL of `accmon run`
    left the training running, unwatched, as an orphan). Linux's parent-death signal; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the launcher died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def run_command(cmd: Sequence[str], *, headless: bool, record: str | None, name: str | None = None,
                bind: str | None = None, on_alert: AlertCommand | None = None,
                viewer: dict[str, Any] | None = None, stop_on: str | None = None) -> int:
    """`viewer`: more options for the TUI's AccmonApp (`baseline`, `align`); `stop_on`: alert ids or a severity
    that stop the training gracefully (exit code 3)."""
    if not cmd:
        sys.stderr.write("accmon run: no command given (usage: accmon run [--headless] [--record FILE] -- CMD...)\n")
        return 2
    run_id = registry.new_run_id()  # the launch token; also the run's id unless the command's ranks agree on one
    env = child_env(run_id, record, name or run_name(cmd), bind, stop_on)
    log_path = None
    stdout = stderr = None
    if not headless:
        # The TUI owns the terminal: the command's output goes to a log, shown when the TUI closes.
        log_path = os.path.join(registry.runtime_dir(), f"{run_id}.log")
        stdout = open(log_path, "wb")
        stderr = subprocess.STDOUT
    try:
        proc = subprocess.Popen(list(cmd), env=env, stdout=stdout, stderr=stderr, preexec_fn=_die_with(os.getpid()))
    except OSError as exc:
        sys.stderr.write(f"accmon run: cannot start {cmd[0]!r}: {exc.strerror}\n")
        return 127
    # Ctrl-C reaches the command through the terminal's process group; we only wait for it to finish.
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    forward = signal.signal(signal.SIGTERM, lambda s, f: proc.send_signal(signal.SIGTERM))
    watched = True
    viewer_rc = 0
    heard: dict[int, float] = {}
    try:
        if headless:
            watched = _watch_headless(run_id, proc, heard, on_alert)
        else:
            viewer_rc = _watch_tui(run_id, proc, on_alert, viewer)
            if proc.poll() is None:
                # The viewer closed, the training did not: say so, or the terminal sits blank and silent.
                entries = launched(run_id)
                which = entries[0].run_id if entries else run_id
                sys.stderr.write(f"accmon: viewer closed; the training goes on as pid {proc.pid} (output: {log_path}).\n"
                                 f"accmon: watch it again with `accmon attach {which}`; Ctrl-C stops it, or "
                                 f"`kill {proc.pid}`.\n")
        returncode = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, forward)
        if stdout is not None:
            stdout.close()
    stopped = take_stop_notes(run_id)
    if record:
        finish_recording(record, returncode, heard)
    if not watched:
        _say_what_was_recorded(record)
    if log_path:
        _show_log_tail(log_path)
    if stopped is not None and (returncode >= 0 or returncode == -signal.SIGINT):
        sys.stderr.write(f"accmon: {stop_words(stopped)} (--stop-on); exit code {EXIT_STOPPED}\n")
        return EXIT_STOPPED
    if returncode < 0:
        sys.stderr.write(f"accmon: the command was killed by {signal.Signals(-returncode).name}\n")
        return 128 - returncode
    return returncode or viewer_rc  # a viewer that died (its traceback saved) is no success either


def take_stop_notes(launch: str) -> dict | None:
    """What the command's ranks noted when --stop-on stopped them (probe/iothread.py `_tell_launcher`): the
    first rank's `stopped`, or None. The notes are removed. Read from the runtime directory, not from the
    viewer: it holds also when the run ended before a viewer heard its end, and with no recording."""
    pattern = stop_note_path(launch)
    if pattern is None:
        return None
    found: dict | None = None
    for path in sorted(glob.glob(glob.escape(os.path.dirname(pattern)) + "/" + glob.escape(launch) + ".stopped.*")):
        try:
            with open(path) as fh:
                note = clean_stop(json.loads(fh.read(4096)))
            os.unlink(path)
        except (OSError, ValueError):
            continue
        found = found or note
    return found


def _watch_headless(run_id: str, proc: subprocess.Popen, heard: dict[int, float],
                    on_alert: AlertCommand | None = None) -> bool:
    """Follow the run on stderr; False when the command ended before its run could be attached to. `heard`
    gets when each rank was last heard (RunClient.heard_at), for the exit frames."""
    entries = wait_for_entries(run_id, proc)
    if not entries:
        if on_alert is not None:
            on_alert.close()
        return False
    viewer = HeadlessViewer(entries, on_alert=on_alert)
    viewer.run(until=lambda: proc.poll() is not None)
    heard.update(viewer.last_heard())
    return True


def _say_what_was_recorded(record: str | None) -> None:
    """A run over before the viewer found it (a few fast steps), or none at all: say which, from the recording
    when there is one, so a headless log never ends in silence."""
    if record is None or not os.path.exists(record):
        why = "" if record is None else f" and {record} was not written"
        sys.stderr.write(f"accmon: the command ended before a run could be watched{why} (did it import PyTorch or "
                         "Keras, or call accmon.probe?)\n")
        return
    say_recorded(record)


def _watch_tui(launch: str, proc: subprocess.Popen, on_alert: AlertCommand | None = None,
               viewer: dict[str, Any] | None = None) -> int:
    from .app import AccmonApp, run_app  # textual: `accmon run --headless` never loads it

    # As app.run_live_for_process, but the run is found by this launch's token, not by an id known beforehand.
    source = LiveSource([], find_again=lambda: launched(launch), process=proc)
    return run_app(AccmonApp(source, pick=False, on_alert=on_alert, **(viewer or {})))


def _show_log_tail(path: str, lines: int = 20) -> None:
    try:
        with open(path, "rb") as fh:
            tail = fh.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    if tail:
        sys.stderr.write(f"accmon: last lines of the command's output (all of it in {path}):\n")
        sys.stderr.write("\n".join(tail) + "\n")
