"""Lock staleness and exclusion (pathweak.store.locks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from pathweak._atomic import process_start
from pathweak.store.locks import LockedError, lock_stale, output_lock


def test_staleness_rules():
    host = socket.gethostname()
    assert lock_stale(None)  # unreadable
    assert not lock_stale({"host": host, "pid": os.getpid(), "start": process_start(os.getpid())})
    assert lock_stale({"host": host, "pid": 999999999})
    assert lock_stale({"host": host, "pid": os.getpid(), "start": process_start(os.getpid()) + 5})  # pid reused
    assert not lock_stale({"host": "another-host", "pid": 999999999})  # cannot ask another host: never stale


def test_a_dead_owners_lock_is_taken_over_a_live_one_waited_for(tmp_path):
    out = tmp_path / "store.zarr"
    lock = tmp_path / "store.zarr.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 999999999}))
    with output_lock(out, timeout=5):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pathweak.store.locks import output_lock\n"
        f"with output_lock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match="another run"), output_lock(out, timeout=0.5, poll=0.05):
            pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out, timeout=5):  # its owner died (SIGKILL): stale, taken over
        pass


def test_no_two_holders_at_once(tmp_path):
    """Threads racing for one lock (and for a stale one) never hold it together."""
    out = tmp_path / "x"
    (tmp_path / "x.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 999999999}))
    inside, worst = [0], [0]
    guard = threading.Lock()

    def work():
        for _ in range(20):
            with output_lock(out, timeout=30, poll=0.001):
                with guard:
                    inside[0] += 1
                    worst[0] = max(worst[0], inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert worst[0] == 1


def test_a_stale_lock_is_broken_only_while_it_is_still_the_one_at_the_path(tmp_path):
    """Breaking reads the lock through one open file: a missing lock is never broken (a run may create its
    lock between a look at the path and the unlink; testing "missing" then "exists" let two threads in
    about 5 times in 100 runs of the test above), nor one that now names someone else."""
    from pathweak.store.locks import _still_names

    lock = tmp_path / "x.lock"
    stale = {"host": socket.gethostname(), "pid": 999999999}
    assert not _still_names(lock, None) and not _still_names(lock, stale)  # missing
    lock.write_text("{not json")
    assert _still_names(lock, None) and not _still_names(lock, stale)  # unreadable
    lock.write_text(json.dumps(stale))
    assert _still_names(lock, stale) and not _still_names(lock, None)
    lock.write_text(json.dumps({**stale, "pid": os.getpid()}))  # taken meanwhile by a live run
    assert not _still_names(lock, stale)
