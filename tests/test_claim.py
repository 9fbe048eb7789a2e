"""Whether the holder of an instance's name is known gone, as the shipped unit's sandbox shows
/proc to rulesd (`rulesd.state.claim`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from rulesd.state import claim
from rulesd.state.claim import BOOT_ID_VARIABLE, Holder, gone, this_process

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


@pytest.fixture
def proc_subset_pid(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """/proc as the unit's ProcSubset=pid mounts it: /proc/sys hidden, the boot id given by
    systemd (%b: without dashes) in the environment instead. Yields the boot id."""
    boot = claim._read(BOOT_ID_PATH)
    assert boot, "this test needs the kernel's boot id"
    real_read = claim._read
    monkeypatch.setattr(claim, "_read", lambda path: "" if path.startswith("/proc/sys/") else real_read(path))
    monkeypatch.setenv(BOOT_ID_VARIABLE, boot.replace("-", ""))
    yield boot


def ended_child() -> int:
    """The pid of a process of this host that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_crashed_holder_is_known_gone_under_proc_subset_pid(proc_subset_pid: str) -> None:
    """Under the unit's sandbox the boot id was read as '' (its file hidden): no holder was ever
    known gone, and every restart after a crash, an OOM kill or a watchdog abort waited out the
    30 s lease instead of taking the name at once as it says it does."""
    holder = this_process("t")
    assert holder.boot
    crashed = Holder("old", holder.host, ended_child(), holder.since, holder.boot, holder.pidns, "1")
    assert gone(crashed) is True


def test_a_holder_that_read_the_boot_id_in_proc_is_known_by_the_one_from_systemd(proc_subset_pid: str) -> None:
    """One process ran by hand (/proc whole: the boot id with dashes), the next under the unit."""
    holder = this_process("t")
    crashed = Holder("old", holder.host, ended_child(), holder.since, proc_subset_pid, holder.pidns, "1")
    assert gone(crashed) is True


def test_a_live_holder_proc_does_not_show_is_not_known_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """ProtectProc=invisible hides the processes of other users (a rulesd run by hand under the
    same instance name): its /proc/PID/stat unreadable is no sign that it ended, and its name was
    taken from it."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = this_process("t")
        started = claim._started(live.pid)
        other = Holder("other", holder.host, live.pid, holder.since, holder.boot, holder.pidns, started)
        assert gone(other) is False  # seen running
        real_read = claim._read
        monkeypatch.setattr(claim, "_read", lambda path: "" if path == f"/proc/{live.pid}/stat" else real_read(path))
        assert gone(other) is None  # a live process this one may not look at: its lease is waited out
    finally:
        live.kill()
        live.wait()
    assert gone(Holder("old", holder.host, ended_child(), holder.since, holder.boot, holder.pidns, "1")) is True
