"""The parser of a configured source, built in one place for the daemon and for
`rulesd replay --config`, so that replay reads a log exactly as the daemon would."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rulesd.events import Parser, make_parser
from rulesd.sources.journald import journal_event

if TYPE_CHECKING:  # the configuration brings in the HTTP client, which replay does not need
    from rulesd.config import SourceConfig


def source_parser(config: SourceConfig) -> Parser:
    """How lines of the source `config` become events: a journald source's lines are
    journalctl's JSON entries, whose MESSAGE the text formats apply to; other sources' lines
    are the text itself."""
    return make_parser(config.reading, journal_event if config.type == "journald" else None)
