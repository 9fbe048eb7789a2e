"""Write `man/rulesd.1` from the `rulesd` command's own argparse parser, with argparse-manpage.

Run `python man/make_manpage.py` after changing the command line; `tests/test_manpage.py` fails
while the committed page differs from what this writes.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

# argparse wraps help text to the terminal's width: the page must not depend on who generates it.
os.environ["COLUMNS"] = "80"

from argparse_manpage.manpage import Manpage

from rulesd import __version__
from rulesd.cli import build_parser

PAGE = Path(__file__).resolve().with_name("rulesd.1")

SECTIONS = {
    "EXIT STATUS": r"""
.TP
.B 0
Success: rules valid, all rule tests passed, or the daemon stopped cleanly.
.TP
.B 1
Invalid rules, a failed rule test, or a fatal error of the running daemon.
.TP
.B 2
A usage or configuration error (the daemon does not start, and systemd should not restart it).
""",
    "ENVIRONMENT": r"""
.TP
.B RULESD_OPSGENIE_API_KEY
The OpsGenie API key, when the configuration names no \fBapi_key_file\fR.
.TP
.B CREDENTIALS_DIRECTORY
Set by systemd's \fBLoadCredential=\fR; the key is read from \fIopsgenie\-api\-key\fR in it.
.TP
.B STATE_DIRECTORY
Set by systemd's \fBStateDirectory=\fR; the default state directory.
.TP
.B NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM
Set by systemd: readiness and watchdog notifications, and journal priority prefixes on log lines.
""",
    "FILES": r"""
.TP
.I /etc/rulesd/rulesd.yaml
The daemon configuration (\fBrulesd schema config\fR prints its JSON Schema).
.TP
.I /etc/rulesd/rules.d/
Rule files (*.yaml, *.yml), watched and reloaded on change.
.TP
.I /var/lib/rulesd/
State: source positions, the outbox of alerts, window and throttle state.
""",
    "SEE ALSO": r"""
.BR systemctl (1),
.BR journalctl (1),
.BR promtool (1),
.BR systemd.service (5)
""",
}


def render() -> str:
    """The man page's text."""
    page = Manpage(build_parser())
    page.description = "tail events, evaluate YAML trigger rules, page through OpsGenie"
    page.source = f"rulesd {__version__}"
    page.manual = "rulesd manual"
    page.date = ""  # a date would change the page every day; the version says which rulesd it describes
    for heading, content in SECTIONS.items():
        page.add_section(heading, ">", content.strip())
    return str(page)


def main() -> int:
    """Write the page (or, with `--check`, exit 1 if the committed one is out of date)."""
    text = render()
    if "--check" in sys.argv[1:]:
        committed = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        diff = difflib.unified_diff(committed.splitlines(True), text.splitlines(True), "committed", "generated")
        sys.stderr.writelines(diff)
        return 0 if committed == text else 1
    PAGE.write_text(text, encoding="utf-8")
    print(PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
