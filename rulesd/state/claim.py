"""An instance's name, held by one process at a time.

Fleet positions and each instance's record of its last commit are kept in Redis under the
instance's name: two live processes under one name (a templated config setting `instance:`,
containers with the same host name and state directory) would overwrite each other's, and a
restart would then skip lines or read them twice. So a process claims its name while it runs
(a key holding who it is, with a lease it renews), and one that finds it held by another live
process refuses to start, or to commit once it finds out.

Whether the holder still runs is known at once only on the same host, in the same boot and pid
namespace (a container has its own: its pid 1 is not the host's): its pid gone, or running
another program since (a pid used again), it is gone. Elsewhere, its lease is waited out.
"""

from __future__ import annotations

import os
import socket
import time

import msgspec

from rulesd.errors import RulesdError

NAME_LEASE_S = 30.0  # see README: longer than a loop pass can take between two renewals
RENEW_EVERY = 5.0  # seconds between renewals from the loop (commits renew it too)
BOOT_ID_VARIABLE = "RULESD_BOOT_ID"  # set by the unit (see `_boot_id`)


class Holder(msgspec.Struct, frozen=True):
    """Who holds a name: its process (`token`, unique to it), host, pid and since when (wall
    time), and what tells on the same host whether that pid is still the holder."""

    token: str
    host: str
    pid: int
    since: float
    boot: str = ""  # the kernel's boot id: the same host since the same boot
    pidns: str = ""  # the pid namespace (a container's own)
    started: str = ""  # the process's start time, in clock ticks since boot


class NameTaken(RulesdError):
    """Another live process holds this instance's name: a configuration error."""

    def __init__(self, instance: str, holder: Holder, config: str, *, running: bool = False) -> None:
        self.instance, self.holder = instance, holder
        super().__init__(
            f"instance {instance!r} is "
            + ("now held by" if running else "in use by")
            + f" another rulesd process ({describe(holder)}): two processes under one name overwrite each"
            " other's source positions, so a restart skips lines or reads them twice"
            + ("; this one commits nothing more" if running else "")
            + f": give each its own name with state: {{instance: …}} in {config}, or stop the other"
        )


class StoppedWaiting(RulesdError):
    """A stop came while the start waited out another process's lease (or for Redis: `unanswered`,
    why it had not answered): the process ends as after any stop (exit 0), its name not claimed,
    nothing read (so nothing lost)."""

    def __init__(self, instance: str, holder: Holder | None, heard: str, unanswered: str = "") -> None:
        waited = (
            f"Redis had not answered: {unanswered}"
            if holder is None
            else f"held by {describe(holder)}, whose lease was being waited out"
        )
        super().__init__(
            f"received {heard or 'a stop'}: stopping before the start: instance {instance!r} was not claimed"
            f" ({waited}) and nothing was read"
        )


def describe(holder: Holder) -> str:
    """`pid 41 on host web-1 since 2026-12-06 15:04:30 UTC`."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.since))
    return f"pid {holder.pid} on host {holder.host} since {since}"


def this_process(token: str) -> Holder:
    """The holder this process is."""
    pid = os.getpid()
    return Holder(token, socket.gethostname(), pid, time.time(), _boot_id(), _pid_namespace(), _started(pid))


def encode(holder: Holder) -> bytes:
    return msgspec.json.encode(holder)


def decode(raw: bytes) -> Holder:
    """A holder as stored (a value that is not one, written by hand: a holder unknown)."""
    try:
        return msgspec.json.decode(raw, type=Holder)
    except msgspec.DecodeError:
        return Holder(raw.decode(errors="replace"), "(unknown)", 0, 0.0)


def gone(holder: Holder) -> bool | None:
    """True if the holder's process is known to have ended, False if it runs, None if this host
    cannot tell (another host, boot or pid namespace)."""
    if not holder.boot or not holder.pidns:
        return None
    boot = holder.boot.replace("-", "").lower()  # as written by a process that read /proc
    if (holder.host, boot, holder.pidns) != (socket.gethostname(), _boot_id(), _pid_namespace()):
        return None
    if holder.pid == os.getpid():  # this pid, in the same namespace: an earlier process's
        return True
    started = _started(holder.pid)
    if not started:
        return _no_process(holder.pid)
    return bool(holder.started) and started != holder.started


def _no_process(pid: int) -> bool | None:
    """True if no process has `pid`, None if one does that /proc does not show this one (the unit's
    ProtectProc=invisible hides other users' processes: a rulesd run by hand under the same name)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it runs, as another user
        return None
    return None


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _boot_id() -> str:
    """The kernel's boot id, without dashes. The unit's ProcSubset=pid hides /proc/sys: it passes
    systemd's own (%b) as RULESD_BOOT_ID instead; without either no holder was known gone, and
    every restart after a crash waited out the lease."""
    boot = _read("/proc/sys/kernel/random/boot_id") or os.environ.get(BOOT_ID_VARIABLE, "").strip()
    return boot.replace("-", "").lower()


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _started(pid: int) -> str:
    """The start time of process `pid` ('' if there is none): field 22 of its stat, after the
    command name (which may hold spaces and parentheses)."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""
