"""Many ranks, many hosts: one run id for the ranks of a multi-node torchrun job, gathered by one viewer.

What is simulated, and how. Every "host" here is this machine reached through the real sshd of tests/sshd.py
under an alias of an ssh_config (`ssh://hosta`, `ssh://hostb`): ssh resolves the alias, and the session gets
that host's own runtime directory through `SetEnv` — so each "host" lists only its own registry and serves only
its own sockets, and a viewer reaches them only through ssh, one connection per host, as it would two GPU
nodes. The two torchrun "nodes" are two real `torchrun --nnodes=2 --node_rank=K` launches (static rendezvous,
gloo on CPU) on this machine, each under its own `accmon run` with its own runtime directory. What is not
simulated: separate kernels (the sockets of both "hosts" are on one filesystem, which the code under test never
relies on: the ssh path is taken by name, and `ls --here` keeps each listing to its own directory).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from accmon.probe import registry
from accmon.probe.recording import RecordingError
from accmon.tui import remote
from tests.conftest import ACCMON, all_steps, read_frames, run_accmon, write_script
from tests.sshd import sshd  # noqa: F401  (the fixture)

WAIT_S = 180  # upper bounds so that a broken build fails instead of hanging; never a timing assertion


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def short_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # ipc:// paths are limited to ~107 bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return path if os.path.exists(path) else (shutil.which("torchrun") or "")


# -- the run id of a torchrun job -----------------------------------------------------------------------------
IDS = textwrap.dedent(
    """
    import json, os, sys
    import torch  # before start(): the store can be asked
    import accmon.probe as accmon
    from accmon.probe import registry
    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_USE_AGENT_STORE"}
    run = accmon.start("ids")
    out = {"agreed": run.run_id, "from_env": registry.torchrun_run_id(env)}
    with open(os.path.join(sys.argv[1], os.environ["RANK"]), "w") as fh:
        json.dump(out, fh)
    run.close()
    """
)


def ids_of_a_job(tmp_path: Path, script: str, *launch: str) -> list[dict]:
    out = Path(short_dir("ids"))
    proc = subprocess.run([torchrun(), *launch, "--nproc_per_node=2", script, str(out)], capture_output=True,
                          text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [json.loads((out / r).read_text()) for r in ("0", "1")]
    shutil.rmtree(out, ignore_errors=True)
    return found


def test_the_ranks_of_a_torchrun_job_share_one_id_and_the_next_job_gets_another(tmp_path):
    pytest.importorskip("torch")
    script = write_script(tmp_path, "ids.py", IDS)
    port = str(free_port())
    # Static rendezvous, the same master address and port twice: what torchrun gives the workers is alike for
    # both jobs (TORCHELASTIC_RUN_ID is "none"), so only the agreement through the job's store tells them apart.
    static = ("--nnodes=1", "--rdzv-backend=static", "--master_addr=127.0.0.1", f"--master_port={port}")
    first, second = ids_of_a_job(tmp_path, script, *static), ids_of_a_job(tmp_path, script, *static)
    for job in (first, second):
        assert job[0]["agreed"] == job[1]["agreed"], "both ranks of one job have one run id"
        assert job[0]["from_env"] == job[1]["from_env"], "the fallback from torchrun's variables agrees too"
    assert first[0]["agreed"] != second[0]["agreed"], "two jobs never share an id"
    assert first[0]["from_env"] == second[0]["from_env"], "(why the store is asked: the variables alone are alike)"
    # The default one-node launch (c10d, a fresh rendezvous id): the ranks agree, and differ from the jobs above.
    default = ids_of_a_job(tmp_path, script)
    assert default[0]["agreed"] == default[1]["agreed"] not in (first[0]["agreed"], second[0]["agreed"])


def test_the_id_from_torchruns_variables_alone():
    env = {"TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "node0", "MASTER_PORT": "29500", "WORLD_SIZE": "8",
           "TORCHELASTIC_RESTART_COUNT": "0"}
    rid = registry.torchrun_run_id(env)
    assert rid == registry.torchrun_run_id(dict(env)), "every node computes the same id"
    others = [{**env, "MASTER_PORT": "29501"}, {**env, "TORCHELASTIC_RUN_ID": "job-7"},
              {**env, "TORCHELASTIC_RESTART_COUNT": "1"}, {**env, "SLURM_JOB_ID": "4242"}]
    assert len({rid, *(registry.torchrun_run_id(o) for o in others)}) == 5
    assert registry.torchrun_run_id({}) is None, "not a torchrun worker"
    # The order: the user's own id, then torchrun's job, then `accmon run`'s launch token.
    assert registry.run_id_from_env({**env, "ACCMON_RUN_ID": "mine", "ACCMON_LAUNCH": "tok"}) == "mine"
    assert registry.run_id_from_env({**env, "ACCMON_LAUNCH": "tok"}) == rid
    assert registry.run_id_from_env({"ACCMON_LAUNCH": "tok"}) == "tok"


# -- a two-node job, gathered over ssh --------------------------------------------------------------------------
DDP = textwrap.dedent(
    """
    import os, sys, time
    import torch
    import torch.distributed as dist
    from torch import nn, optim
    from torch.nn.parallel import DistributedDataParallel

    stop = sys.argv[1]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(rank)
    for step in range(100_000):
        x = torch.randn(32, 8, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        flag = torch.tensor([float(os.path.exists(stop))])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        if flag.item():
            break
        time.sleep(0.01)
    dist.destroy_process_group()
    """
)


class Node:
    """One torchrun node: `accmon run --headless --record REC -- torchrun --nnodes=2 --node_rank=K ...` with
    its own runtime directory (its "host")."""

    def __init__(self, tmp_path: Path, script: str, stop: Path, node_rank: int, port: int) -> None:
        self.dir = short_dir(f"n{node_rank}")
        self.record = tmp_path / f"node{node_rank}.accmon"
        env = {**os.environ, "ACCMON_RUNTIME_DIR": self.dir}
        self.proc = subprocess.Popen(
            [*ACCMON, "run", "--headless", "--record", str(self.record), "--", torchrun(), "--nnodes=2",
             f"--node_rank={node_rank}", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}",
             script, str(stop)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def entries(self) -> list[registry.RunEntry]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".json"):
                e = registry.load_entry(os.path.join(self.dir, name))
                if e is not None:
                    out.append(e)
        return sorted(out, key=lambda e: e.rank)

    def finish(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=WAIT_S)
        finally:
            self.kill()
        return err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_a_two_node_torchrun_job_is_one_run_gathered_from_both_hosts_over_ssh(sshd, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    if not torchrun():
        pytest.skip("no torchrun")
    script = write_script(tmp_path, "train_ddp.py", DDP)
    stop = tmp_path / "stop"
    port = free_port()
    nodes = [Node(tmp_path, script, stop, k, port) for k in (0, 1)]
    out = tmp_path / "viewer.accmon"
    viewer = None
    try:
        wait_until(lambda: all(len(n.entries()) == 2 for n in nodes) or any(n.proc.poll() is not None for n in nodes),
                   "both nodes' ranks to register")
        a, b = nodes[0].entries(), nodes[1].entries()
        assert [e.rank for e in a] == [0, 1] and [e.rank for e in b] == [2, 3]
        assert len({e.run_id for e in a + b}) == 1, "one run id on both hosts"
        run_id = a[0].run_id
        assert all(e.world_size == 4 for e in a + b)

        hosts = {"hosta": {"ACCMON_RUNTIME_DIR": nodes[0].dir}, "hostb": {"ACCMON_RUNTIME_DIR": nodes[1].dir}}
        for k, v in sshd.hosts_env(hosts).items():
            monkeypatch.setenv(k, v)
        listed = run_accmon("ls", "ssh://hosta", "ssh://hostb", "--json", timeout=WAIT_S)
        assert listed.returncode == 0, listed.stderr
        by_rank = {e["rank"]: e for e in json.loads(listed.stdout)}
        assert sorted(by_rank) == [0, 1, 2, 3] and {e["run_id"] for e in by_rank.values()} == {run_id}
        assert {r: by_rank[r]["extra"]["via"] for r in by_rank} == {0: "ssh://hosta", 1: "ssh://hosta",
                                                                   2: "ssh://hostb", 3: "ssh://hostb"}
        human = run_accmon("ls", "ssh://hosta", "ssh://hostb", timeout=WAIT_S)
        assert human.returncode == 0 and human.stdout.count(run_id) == 4

        viewer = subprocess.Popen([*ACCMON, "attach", "--headless", "--record", str(out), "ssh://hosta", "ssh://hostb"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def every_rank_recorded() -> bool:
            if viewer.poll() is not None:
                raise AssertionError(f"the viewer ended early: {viewer.stderr.read()}")
            return out.exists() and all(len(all_steps(read_frames(out), r)) > 20 for r in range(4))

        wait_until(every_rank_recorded, "steps of all four ranks in the viewer's recording")
        stop.touch()
        _, err = viewer.communicate(timeout=WAIT_S)
        assert viewer.returncode == 0, err
        assert "ranks 0, 1 on hosta through ssh; ranks 2, 3 on hostb through ssh" in err
        node_errs = [n.finish() for n in nodes]
        assert [n.proc.returncode for n in nodes] == [0, 0], node_errs
    finally:
        stop.touch()
        if viewer is not None and viewer.poll() is None:
            viewer.kill()
            viewer.wait()
        for n in nodes:
            n.kill()

    report = run_accmon("check", str(out), "--json")
    run = json.loads(report.stdout)["run"]
    assert run["id"] == run_id and run["ranks"] == [0, 1, 2, 3] and run["status"] == "finished"
    frames = read_frames(out)
    for r in range(4):
        steps = all_steps(frames, r)
        assert steps == list(range(len(steps))), f"rank {r}: steps missing, repeated or out of order"
        assert [f for f in frames if f["rank"] == r and f["kind"] == "end"], f"rank {r} has no end frame"
    assert len({len(all_steps(frames, r)) for r in range(4)}) == 1, "DDP: every rank ran the same steps"
    # Each node's own `accmon run --record` holds its own ranks, under the same run id.
    for n, ranks in zip(nodes, ([0, 1], [2, 3])):
        local = json.loads(run_accmon("check", str(n.record), "--json").stdout)["run"]
        assert local["id"] == run_id and local["ranks"] == ranks


# -- a shared registry ----------------------------------------------------------------------------------------
RANKS = textwrap.dedent(
    """
    import os, sys, time
    from accmon.probe import Run
    stop, first = sys.argv[1], int(sys.argv[2])
    runs = [Run("shared", run_id=sys.argv[3], rank=r, world_size=4) for r in (first, first + 1)]
    print("up", flush=True)
    step = 0
    while not os.path.exists(stop) and step < 100_000:
        for run in runs:
            run.log(step, loss=1.0 / (step + 1))
        step += 1
        time.sleep(0.005)
    for run in runs:
        run.close()
    """
)


def _has_ranks(path: Path, ranks: range) -> bool:
    """Whether the recording at `path` holds steps of every rank yet: the command creates the file before its
    first write reaches the disk (its header with its first sync), and an empty file is not an error here."""
    try:
        frames = read_frames(path)
    except (FileNotFoundError, RecordingError):
        return False
    return all(all_steps(frames, r) for r in ranks)


def test_a_shared_registry_attaches_this_hosts_ranks_directly_and_the_others_through_ssh(sshd, tmp_path, monkeypatch,
                                                                                       runtime_dir):
    """Ranks 0-1 run on this host (runtime dir A), ranks 2-3 on "hostb" (runtime dir B, `ACCMON_HOST=hostb`);
    all register in one shared `ACCMON_REGISTRY`, as on a filesystem every node mounts. hostb's ssh session is
    NOT given ACCMON_REGISTRY: the viewer must tell its `ls --follow` where to look."""
    shared = short_dir("reg")
    dir_b = short_dir("hb")
    stop = tmp_path / "stop"
    script = write_script(tmp_path, "ranks.py", RANKS)
    run_id = "0101000000-shared"
    monkeypatch.setenv("ACCMON_REGISTRY", shared)
    for k, v in sshd.hosts_env({"hostb": {"ACCMON_RUNTIME_DIR": dir_b, "ACCMON_HOST": "hostb"}}).items():
        monkeypatch.setenv(k, v)
    here = subprocess.Popen([sys.executable, script, str(stop), "0", run_id], stdout=subprocess.PIPE, text=True)
    there = subprocess.Popen([sys.executable, script, str(stop), "2", run_id], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "ACCMON_RUNTIME_DIR": dir_b, "ACCMON_HOST": "hostb"})
    out = tmp_path / "viewer.accmon"
    cli = None
    try:
        for p in (here, there):
            assert p.stdout.readline().strip() == "up"
        entries = registry.find_run(run_id)
        assert [(e.rank, e.host) for e in entries] == [(0, socket.gethostname()), (1, socket.gethostname()),
                                                       (2, "hostb"), (3, "hostb")]
        assert all(name.endswith(".json") for name in os.listdir(shared)), "only entries are shared: sockets stay local"
        listed = run_accmon("ls")
        assert listed.returncode == 0 and "hostb" in listed.stdout and listed.stdout.count(run_id) == 4

        # The command: `accmon attach RUN` finds the run in the shared registry and routes it by itself.
        cli_out = tmp_path / "cli.accmon"
        cli = subprocess.Popen([*ACCMON, "attach", run_id, "--headless", "--record", str(cli_out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        routed = remote.route_local(entries)
        assert [e.extra.get("via") for e in routed] == [None, None, "ssh://hostb", "ssh://hostb"]
        hr = remote.open_routes(routed)
        assert isinstance(hr, remote.HostsRun)
        hr.start(batch=True)
        try:
            got = {e.rank: e for e in hr.entries}
            assert sorted(got) == [0, 1, 2, 3]
            assert [got[r].pub for r in (0, 1)] == [e.pub for e in entries[:2]], "this host's ranks: directly"
            for r in (2, 3):
                assert got[r].extra["remote"] == "ssh://hostb" and got[r].pub != entries[r].pub, "hostb's: through ssh"
            assert [p.target.host for p in hr.parts] == ["hostb"]
            from accmon.tui.headless import HeadlessViewer

            viewer = HeadlessViewer(hr.entries, record=str(out), discover=False, quiet=True)
            result: list[int] = []
            t = threading.Thread(target=lambda: result.append(viewer.run(until=hr.gone)), daemon=True)
            t.start()
            wait_until(lambda: viewer.steps > 400, "steps from all four ranks")
            wait_until(lambda: _has_ranks(cli_out, range(4)), "the command's recording to hold all four ranks")
            stop.touch()
            t.join(WAIT_S)
            assert result == [0]
            _, err = cli.communicate(timeout=WAIT_S)
            assert cli.returncode == 0, err
            assert "ranks 0, 1 on this host; ranks 2, 3 on hostb through ssh" in err
            # hostb's ranks left its registry: its connection says so, and with this host's ranks ended, the run is gone.
            wait_until(lambda: hr.parts[0].state == "gone", "hostb's connection to see its ranks gone")
            wait_until(hr.gone, "the run to be gone on every host")
        finally:
            hr.close()
    finally:
        stop.touch()
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.wait()
        for p in (here, there):
            try:
                p.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(dir_b, ignore_errors=True)
    frames = read_frames(out)
    for r in range(4):
        steps = all_steps(frames, r)
        assert steps and steps == list(range(len(steps))), f"rank {r}"
    for path in (out, cli_out):
        report = json.loads(run_accmon("check", str(path), "--json").stdout)["run"]
        assert report["ranks"] == [0, 1, 2, 3] and report["status"] == "finished", path


# -- two hosts, each with its own connection -------------------------------------------------------------------
class TwoHosts:
    """Ranks 0-1 of one run on "hosta", ranks 2-3 on "hostb" (explicit API, the same run id: as the ranks of
    one job are), each "host" a runtime directory reached only through its own ssh alias."""

    def __init__(self, sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dirs = {"hosta": short_dir("ha"), "hostb": short_dir("hb")}
        self.stop_file = tmp_path / "stop"
        self.run_id = "0101000000-twohosts"
        script = write_script(tmp_path, "ranks.py", RANKS)
        for k, v in sshd.hosts_env({h: {"ACCMON_RUNTIME_DIR": d} for h, d in self.dirs.items()}).items():
            monkeypatch.setenv(k, v)
        self.procs = [subprocess.Popen([sys.executable, script, str(self.stop_file), str(first), self.run_id],
                                       stdout=subprocess.PIPE, text=True, env={**os.environ, "ACCMON_RUNTIME_DIR": d})
                      for first, d in ((0, self.dirs["hosta"]), (2, self.dirs["hostb"]))]
        for p in self.procs:
            assert p.stdout.readline().strip() == "up"
        self.targets = [remote.parse_target("ssh://hosta"), remote.parse_target("ssh://hostb")]

    def stop(self) -> list[int]:
        self.stop_file.touch()
        return [p.wait(WAIT_S) for p in self.procs]

    def close(self) -> None:
        self.stop_file.touch()
        for p in self.procs:
            try:
                p.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for d in self.dirs.values():
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def two_hosts(sshd, tmp_path, monkeypatch):
    hosts = TwoHosts(sshd, tmp_path, monkeypatch)
    yield hosts
    hosts.close()


def test_one_hosts_connection_drops_and_reconnects_while_the_other_streams_on(two_hosts, tmp_path):
    import signal

    from accmon.tui.headless import HeadlessViewer

    events: list[str] = []
    hr = remote.open_hosts(two_hosts.targets, on_event=events.append)
    out = tmp_path / "viewer.accmon"
    try:
        assert isinstance(hr, remote.HostsRun) and [e.rank for e in hr.entries] == [0, 1, 2, 3]
        a, b = hr.parts
        assert a.ssh_pid != b.ssh_pid, "one ssh connection per host"
        viewer = HeadlessViewer(hr.entries, record=str(out), discover=False, quiet=True)
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(viewer.run(until=hr.gone)), daemon=True)
        t.start()
        wait_until(lambda: viewer.steps > 400, "steps before the cut")
        os.kill(b.ssh_pid, signal.SIGKILL)  # hostb's link drops; hosta's stays
        wait_until(lambda: b.reconnects == 1 and b.state == "connected", "hostb's reconnection")
        assert a.reconnects == 0 and hr.reconnects == 1
        assert any("hostb" in e and "lost" in e for e in events) and not any("hosta" in e and "lost" in e for e in events)
        at = viewer.steps
        wait_until(lambda: viewer.steps > at + 400, "steps after the reconnection")
        assert two_hosts.stop() == [0, 0]
        t.join(WAIT_S)
        assert result == [0]
    finally:
        hr.close()
    frames = read_frames(out)
    for r in range(4):
        steps = all_steps(frames, r)
        assert steps == list(range(len(steps))) and len(steps) > 100, f"rank {r}: a gap or a duplicate"
        seqs = [f["seq"] for f in frames if f["rank"] == r]
        assert seqs == list(range(1, len(seqs) + 1)), f"rank {r}: frames missing or repeated across the cut"


def test_the_app_shows_the_ranks_of_two_hosts_as_one_run(two_hosts, tmp_path):
    import asyncio

    from accmon.tui.app import AccmonApp

    listing = remote.gather(two_hosts.targets)
    source = remote.RemoteSource(None, remote.pick_run(listing, None), record=str(tmp_path / "app.accmon"))
    app = AccmonApp(source)
    app.animation_level = "none"

    async def go() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + WAIT_S
            while not (sorted(app.store.ranks) == [0, 1, 2, 3] and (app.head_step() or 0) > 100):
                assert time.monotonic() < deadline, "gave up waiting for the four ranks in the app"
                app.sync_now()
                await pilot.pause(0.05)
            assert isinstance(source.remote, remote.HostsRun) and len(source.remote.parts) == 2

    asyncio.run(go())
    assert source.remote.state == "closed" and all(p.proc.poll() is not None for p in source.remote.parts)
