"""Tests for rulesd.sources.journald: the journalctl command line, entry -> event mapping,
cursors, restarts. A stand-in `journalctl` on PATH replays tests/data/journal/entries.jsonl."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rulesd.errors import RulesdError
from rulesd.events import InvalidEvent
from rulesd.sources.journald import JournalCursor, JournaldSource, journal_event, journalctl_argv, match_args
from tests.fake_clock import FakeClock
from tests.lines_view import each_line

ENTRIES = Path(__file__).parent / "data" / "journal" / "entries.jsonl"
LINES = ENTRIES.read_bytes().splitlines()
CURSORS = [json.loads(line)["__CURSOR"] for line in LINES]
BASE = ["journalctl", "--follow", "--output=json", "--all", "--no-pager", "--boot=all"]

# Records each run's argv and pid, honours --after-cursor and --lines=0, then replays the
# fixture; per run it may die half-way through an entry ("die_after": entries written first).
STAND_IN = """\
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "journalctl.json")) as f:
    conf = json.load(f)
args = sys.argv[1:]
if args == ["--version"]:
    print(conf.get("version", "systemd 255 (255.4-1ubuntu8)"))
    sys.exit(0)
log = os.path.join(here, "runs.jsonl")
with open(log, "a") as f:
    f.write(json.dumps({"argv": args, "pid": os.getpid()}) + "\\n")
with open(log) as f:
    run = sum(1 for _ in f) - 1
with open(conf["entries"], "rb") as f:
    lines = f.read().splitlines()
after = [a.split("=", 1)[1] for a in args if a.startswith("--after-cursor=")]
if after:
    cursors = [json.loads(line)["__CURSOR"] for line in lines]
    lines = lines[cursors.index(after[0]) + 1:]
elif "--lines=0" in args:
    lines = []
if conf.get("gate"):
    with open(conf["gate"]) as gate:
        gate.read()
dies = conf.get("die_after", [])
die_at = dies[run] if run < len(dies) else None
out = sys.stdout.buffer
for i, line in enumerate(lines):
    if i == die_at:
        out.write(line[: len(line) // 2])
        break
    out.write(line + b"\\n")
out.flush()
open(os.path.join(here, f"written.{run}"), "w").close()
if die_at is not None:
    sys.stderr.write("Failed to iterate through journal: Bad message\\n")
    sys.stderr.flush()
    os._exit(1)
if conf.get("then") == "exit":
    sys.exit(0)
while True:
    time.sleep(3600)
"""


class StandIn:
    """The stand-in journalctl in a temporary PATH directory, and what it recorded."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.script = directory / "journalctl"
        self.script.write_text(f"#!{sys.executable}\n{STAND_IN}")
        self.script.chmod(self.script.stat().st_mode | stat.S_IXUSR)
        self.configure()

    def configure(self, **conf: Any) -> None:
        conf.setdefault("entries", str(ENTRIES))
        (self.directory / "journalctl.json").write_text(json.dumps(conf))

    def runs(self) -> list[dict[str, Any]]:
        log = self.directory / "runs.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def wait_written(self, run: int, timeout: float = 20.0) -> None:
        """Until run number `run` has written (and flushed) everything it will write."""
        deadline = time.monotonic() + timeout
        while not (self.directory / f"written.{run}").exists():
            assert time.monotonic() < deadline, f"journalctl run {run} did not finish writing"
            time.sleep(0.01)

    def wait_runs(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The recorded runs, once there are `count` of them (a run records itself as it starts)."""
        deadline = time.monotonic() + timeout
        while len(runs := self.runs()) < count:
            assert time.monotonic() < deadline, f"journalctl ran {len(runs)} time(s), not {count}"
            time.sleep(0.01)
        return runs


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return StandIn(bin_dir)


@pytest.fixture
def open_source() -> Iterator[Callable[..., JournaldSource]]:
    opened: list[JournaldSource] = []

    def make(*args: Any, **kwargs: Any) -> JournaldSource:
        kwargs.setdefault("backoff", (0.0, 0.0))
        source = JournaldSource(*args, **kwargs)
        opened.append(source)
        return source

    yield make
    for source in opened:
        source.close()


def read_lines(source: JournaldSource, count: int, *, batch: int = 1000, timeout: float = 20.0) -> list[bytes]:
    """Exactly `count` lines, read at most `batch` at a time (waiting between reads)."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"gave up after {len(got)} line(s)"
        lines = list(each_line(source.read(min(batch, count - len(got)))))
        if not lines:
            source.wait(0.5)
        got.extend(line.data for line in lines)
    return got


def wait_stopped(source: JournaldSource, timeout: float = 20.0) -> None:
    """Read until journalctl has exited and the source noticed."""
    deadline = time.monotonic() + timeout
    while source.running:
        assert time.monotonic() < deadline, "journalctl did not exit"
        source.wait(0.5)
        list(each_line(source.read(1000)))


# -- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "start"),
    [
        ({"cursor": None, "start_at": "end"}, ["--lines=0"]),
        ({"cursor": None, "start_at": "beginning"}, ["--lines=all"]),
        ({"cursor": "s=1;i=2", "start_at": "end"}, ["--after-cursor=s=1;i=2", "--lines=all"]),
        ({"cursor": "s=1;i=2", "start_at": "beginning", "since": 99}, ["--after-cursor=s=1;i=2", "--lines=all"]),
        ({"cursor": None, "start_at": "end", "since": 1718035200}, ["--since=@1718035200", "--lines=all"]),
    ],
)
def test_argv_start(kwargs: dict[str, Any], start: list[str]) -> None:
    """A saved cursor wins over start_at; --lines=all keeps --follow from stopping at 10 entries."""
    assert BASE + start == journalctl_argv("journalctl", (), (), **kwargs)


def test_argv_units_and_matches() -> None:
    """Units become --unit= options, matches FIELD=value words, with no '+' between them."""
    matches = match_args({"PRIORITY": ["3", "4"], "SYSLOG_IDENTIFIER": "app"})
    expected = [
        *BASE,
        "--lines=0",
        "--unit=a.service",
        "--unit=b*.service",
        "PRIORITY=3",
        "PRIORITY=4",
        "SYSLOG_IDENTIFIER=app",
    ]
    assert expected == journalctl_argv("journalctl", ["a.service", "b*.service"], matches, cursor=None, start_at="end")


def test_argv_without_boot_all_for_old_journalctl() -> None:
    """--boot=all is left out when journalctl is too old to know it."""
    argv = journalctl_argv("/bin/journalctl", (), (), cursor=None, start_at="end", boot_all=False)
    assert ["/bin/journalctl", "--follow", "--output=json", "--all", "--no-pager", "--lines=0"] == argv


@pytest.mark.parametrize(
    "matches",
    [
        {"priority": "3"},
        {"1FIELD": "x"},
        {"A+B": "x"},
        {"+": "x"},
        {"F" * 65: "x"},
        {"FIELD": []},
    ],
)
def test_bad_matches_are_refused(matches: dict[str, Any]) -> None:
    """Lower case, leading digits, other characters, over 64 bytes, or no value at all."""
    with pytest.raises(RulesdError):
        match_args(matches)


def test_the_command_line_journalctl_receives(stand_in: StandIn, open_source: Callable[..., JournaldSource]) -> None:
    """Units, matches and the saved cursor reach journalctl as built."""
    open_source(
        ["nginx.service", "payments.service"],
        {"PRIORITY": ["2", "3"], "_HOSTNAME": "web-01"},
        saved={"journald": {"cursor": CURSORS[1]}},
    )
    expected = [
        *BASE[1:],
        f"--after-cursor={CURSORS[1]}",
        "--lines=all",
        "--unit=nginx.service",
        "--unit=payments.service",
        "PRIORITY=2",
        "PRIORITY=3",
        "_HOSTNAME=web-01",
    ]
    assert [expected] == [run["argv"] for run in stand_in.wait_runs(1)]


def test_old_journalctl_gets_no_boot_all(stand_in: StandIn, open_source: Callable[..., JournaldSource]) -> None:
    """The version journalctl reports decides about --boot=all."""
    stand_in.configure(version="systemd 239 (239-78.el8)")
    open_source()
    assert ["--follow", "--output=json", "--all", "--no-pager", "--lines=0"] == stand_in.wait_runs(1)[0]["argv"]


def test_missing_journalctl_is_a_clear_error(tmp_path: Path) -> None:
    """A journalctl that cannot be run fails the construction, naming it."""
    with pytest.raises(RulesdError, match=r"cannot run '/nonexistent/journalctl'.*installed"):
        JournaldSource(journalctl="/nonexistent/journalctl")


def test_bad_start_at_is_refused(stand_in: StandIn) -> None:
    """start_at is beginning or end."""
    with pytest.raises(RulesdError, match="start_at"):
        JournaldSource(start_at="middle")


# -- entries -> events --------------------------------------------------------------------------


def test_entry_mapped_to_event() -> None:
    """The well-known fields are lifted out; every original field stays under `journal`."""
    event = journal_event(LINES[0])
    assert {
        "message": "Accepted publickey for deploy from 203.0.113.7 port 52144 ssh2: "
        "ED25519 SHA256:Vq3m1kYV0cS0yXl7y1bq0x5t8mS2cPZ4b0Xw1nU7H0E",
        "priority": 6,
        "unit": "ssh.service",
        "host": "web-01",
        "pid": 48213,
        "identifier": "sshd",
        "time": 1718035200.123456,
        "journal": json.loads(LINES[0]),
    } == event


def test_message_as_byte_array_is_decoded_with_replacement() -> None:
    """MESSAGE that is not valid UTF-8 arrives as numbers; bad bytes become U+FFFD."""
    event = journal_event(LINES[3])
    assert "charge failed for merchant caf\ufffd (card declined)" == event["message"]
    assert event["message"] == event["journal"]["MESSAGE"]
    assert ["billing", "card"] == event["journal"]["TAG"]  # a field that occurs twice


def test_unprintable_message_is_decoded() -> None:
    """Valid UTF-8 with control characters is also an array of bytes; decoded exactly."""
    assert "\x1b[33mWARN\x1b[0m retrying charge 3/5" == journal_event(LINES[5])["message"]


def test_absent_fields_are_omitted() -> None:
    """A kernel message has no unit and no pid: those event fields are absent, not null."""
    event = journal_event(LINES[2])
    assert {"message", "priority", "host", "identifier", "time", "journal"} == set(event)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"PRIORITY": "x", "_PID": "", "MESSAGE": "m"}, {"message": "m"}),
        ({"__REALTIME_TIMESTAMP": "-5", "MESSAGE": "m"}, {"message": "m"}),
        ({"MESSAGE": ["first", "second"], "PRIORITY": ["3", "5"]}, {"message": "first", "priority": 3}),
        ({"MESSAGE": [[104, 105], "there"]}, {"message": "hi"}),
        ({"MESSAGE": None}, {}),
        ({"MESSAGE": []}, {"message": ""}),
    ],
)
def test_values_that_do_not_convert_are_left_out(entry: dict[str, Any], expected: dict[str, Any]) -> None:
    """A value that does not convert drops only its event field; `journal` keeps the raw value."""
    event = journal_event(json.dumps(entry).encode())
    journal = event.pop("journal")
    assert expected == event
    assert set(entry) == set(journal)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"MESSAGE": 5}', "MESSAGE: unexpected int"),
        (b'{"MESSAGE": {"a": 1}}', "MESSAGE: unexpected dict"),
        (b'{"MESSAGE": [104, 300]}', "outside 0..255"),
        (b'{"MESSAGE": [true, false]}', "unexpected bool"),
        (b'{"TAG": ["a", 5]}', "TAG: unexpected int"),
    ],
)
def test_invalid_entries(line: bytes, reason: str) -> None:
    """What journalctl never writes is an InvalidEvent with a reason."""
    with pytest.raises(InvalidEvent, match=reason):
        journal_event(line)


def test_raw_invalid_utf8_from_old_journalctl_is_replaced() -> None:
    """Old journalctl wrote bad bytes raw inside JSON strings; the entry is still read."""
    assert "caf\ufffd" == journal_event(b'{"MESSAGE": "caf\xe9"}')["message"]


def test_cursor_round_trips_through_json() -> None:
    """A JournalCursor saves as {"cursor": ...} and comes back equal; garbage is refused."""
    cursor = JournalCursor(CURSORS[0])
    assert {"cursor": CURSORS[0]} == cursor.to_json()
    assert cursor == JournalCursor.from_json(json.loads(json.dumps(cursor.to_json())))
    with pytest.raises(RulesdError):
        JournalCursor.from_json({"dev": 1})


# -- following journalctl -----------------------------------------------------------------------


def test_start_at_beginning_reads_everything(stand_in: StandIn, open_source: Callable[..., JournaldSource]) -> None:
    """start_at=beginning replays the whole journal, in order."""
    source = open_source(start_at="beginning")
    assert LINES == read_lines(source, len(LINES))
    assert {"journald": JournalCursor(CURSORS[-1])} == source.checkpoint()


def test_start_at_end_reads_nothing_old(stand_in: StandIn, open_source: Callable[..., JournaldSource]) -> None:
    """start_at=end asks for --lines=0; with nothing handed out there is nothing to checkpoint."""
    source = open_source(start_at="end")
    assert "--lines=0" in stand_in.wait_runs(1)[0]["argv"]
    source.wait(0.05)
    assert [] == list(each_line(source.read(1000)))
    assert {} == source.checkpoint()


def test_checkpoint_is_the_last_line_handed_out(stand_in: StandIn, open_source: Callable[..., JournaldSource]) -> None:
    """The cursor follows read()'s results, not what has been read from the pipe."""
    source = open_source(start_at="beginning")
    stand_in.wait_written(0)  # the whole journal is in the pipe: one read takes it all
    assert LINES[:2] == [line.data for line in list(each_line(source.read(2)))]
    assert 0 < source.lag_bytes()
    assert {"journald": JournalCursor(CURSORS[1])} == source.checkpoint()


def test_resume_after_saved_cursor_on_a_new_source(
    stand_in: StandIn, open_source: Callable[..., JournaldSource]
) -> None:
    """A new source given the saved cursor continues with the next entry."""
    first = open_source(start_at="beginning")
    got = read_lines(first, 3)
    saved = json.loads(json.dumps({key: p.to_json() for key, p in first.checkpoint().items()}))
    first.close()
    second = open_source(saved=saved, start_at="beginning")
    got += read_lines(second, len(LINES) - 3)
    assert LINES == got
    assert f"--after-cursor={CURSORS[2]}" in stand_in.runs()[1]["argv"]


def test_dead_journalctl_is_restarted_without_loss_or_duplicates(
    stand_in: StandIn, open_source: Callable[..., JournaldSource]
) -> None:
    """journalctl dying half-way through an entry restarts after the last entry handed out."""
    stand_in.configure(die_after=[3, 1])  # run 1: 3 entries and half of the 4th; run 2: one more
    warnings: list[str] = []
    source = open_source(start_at="beginning", warn=warnings.append)
    got = read_lines(source, len(LINES), batch=2)
    assert LINES == got
    assert 2 == source.restarts
    argvs = [run["argv"] for run in stand_in.runs()]
    assert [None, f"--after-cursor={CURSORS[2]}", f"--after-cursor={CURSORS[3]}"] == [
        next((a for a in argv if a.startswith("--after-cursor=")), None) for argv in argvs
    ]
    assert any("Failed to iterate through journal: Bad message" in w for w in warnings)
    assert any("exited with status 1; restarting it" in w for w in warnings)


def test_restart_backoff_doubles_up_to_the_cap(stand_in: StandIn, open_source: Callable[..., JournaldSource]) -> None:
    """Failed runs are retried after 1, 2, 4 ... seconds, never more than the cap."""
    stand_in.configure(die_after=[0] * 10)
    clock = FakeClock()
    warnings: list[str] = []
    source = open_source(clock=clock, backoff=(1.0, 4.0), warn=warnings.append)
    for restarts, delay in enumerate([1.0, 2.0, 4.0, 4.0]):
        wait_stopped(source)
        stopped_at = clock.now
        clock.now = stopped_at + delay - 0.01
        list(each_line(source.read(1000)))
        assert restarts == source.restarts  # not yet due
        clock.now = stopped_at + delay
        list(each_line(source.read(1000)))
        assert restarts + 1 == source.restarts
        stand_in.wait_runs(restarts + 2)
    restarting = [w.split("; ")[1] for w in warnings if "exited with status 1" in w]
    assert ["restarting it in 1s", "restarting it in 2s", "restarting it in 4s", "restarting it in 4s"] == [
        r.split(",")[0] for r in restarting[:4]
    ]


def test_wait_wakes_promptly_on_output(
    stand_in: StandIn, tmp_path: Path, open_source: Callable[..., JournaldSource]
) -> None:
    """wait() returns as soon as journalctl writes, long before its timeout."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    stand_in.configure(gate=str(gate))
    source = open_source(start_at="beginning")
    source.wait(0.05)
    assert [] == list(each_line(source.read(1000)))
    _open_gate(gate)
    started = time.monotonic()
    source.wait(30.0)
    assert time.monotonic() - started < 10.0
    assert LINES[0] == next(each_line(source.read(1))).data


def _open_gate(fifo: Path, timeout: float = 20.0) -> None:
    """Open the FIFO the stand-in waits on (once it listens) and close it: EOF lets it go on."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as exc:  # ENXIO: the stand-in has not opened its end yet
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_over_long_entries_are_skipped_and_counted(
    stand_in: StandIn, open_source: Callable[..., JournaldSource]
) -> None:
    """Entries over max_line_bytes are skipped with a warning; the others come through."""
    warnings: list[str] = []
    source = open_source(start_at="beginning", max_line_bytes=900, warn=warnings.append)
    expected = [line for line in LINES if len(line) <= 900]
    assert expected == read_lines(source, len(expected))
    assert 2 == source.skipped_long
    assert 2 == sum("longer than 900 bytes" in w for w in warnings)


def test_close_stops_journalctl(stand_in: StandIn, open_source: Callable[..., JournaldSource]) -> None:
    """close() terminates and reaps journalctl."""
    source = open_source(start_at="beginning")
    read_lines(source, len(LINES))
    pid = stand_in.runs()[0]["pid"]
    source.close()
    assert not source.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
