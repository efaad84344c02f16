"""Registry entries are files other processes wrote: validated, and never a way to delete or chmod what accmon
did not make (issue 16 item 11)."""

from __future__ import annotations

import json
import os
import stat

from accmon.probe import registry
from tests.conftest import run_accmon


def write_entry(directory: str, name: str, **fields) -> str:
    entry = {"run_id": "0101000000-abcdef", "rank": 0, "name": "x", "host": registry.host_name(),
             "pid": 2**22 + 12345, "started": 0.0, "cmd": ["python"], "pub": "ipc:///nonexistent.pub",
             "ctl": "ipc:///nonexistent.ctl", "pid_start": "1"}
    entry.update(fields)
    path = os.path.join(directory, name)
    with open(path, "w") as fh:
        json.dump(entry, fh)
    return path


def test_a_stale_entry_never_makes_ls_delete_a_file_it_names(runtime_dir, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    entry = write_entry(runtime_dir, "0101000000-abcdef.0.json", pub=f"ipc://{victim}", ctl=f"ipc://{victim}")
    out = run_accmon("ls")
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert victim.read_text() == "keep"  # before: deleted with the dead run's entry
    assert not os.path.exists(entry)  # the stale entry itself is cleaned up


def test_entries_of_the_wrong_shape_are_passed_over(runtime_dir):
    write_entry(runtime_dir, "a.0.json", started="yesterday")
    write_entry(runtime_dir, "b.0.json", pub=5)
    write_entry(runtime_dir, "c.0.json", run_id="../../etc")
    with open(os.path.join(runtime_dir, "d.0.json"), "w") as fh:
        fh.write("[" * 100_000)
    for args in (("ls",), ("ls", "--json"), ("attach", "--headless")):
        out = run_accmon(*args, timeout=60)
        assert "Traceback" not in out.stderr, (args, out.stderr)
    assert registry.list_runs() == []


def test_a_shared_registry_open_to_others_is_refused_not_chmodded(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    out = run_accmon("ls", env={**os.environ, registry.ENV_REGISTRY: str(shared)})
    assert out.returncode == 2 and "chmod 700" in out.stderr and "Traceback" not in out.stderr
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755  # before: silently made 0700
