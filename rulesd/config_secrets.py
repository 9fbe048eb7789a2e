"""The secrets a config may hold inline, and its parsed document kept without them.

A config's parsed document is kept in the cache by its bytes, so that a warm start imports no
PyYAML (~90 M instructions, a sixth of a dry run's start). A secret (an inline API key,
a URL with a password) must stay in the file the operator protects, never be copied into a
cache that backups and other tools may read. So a document holding one is kept blanked: each
secret's value is replaced by where its text stands in the file's text (its start and end),
and put back from the file's text at the next start. The cache's key is the file's bytes, so
that text is the one the places were found in; a secret whose value is not written as it is
(a quoted value with an escape, a folded one) is not found there, and such a document is not
kept: it is parsed at every start, as every document holding a secret was before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rulesd.document import Document

# The secrets redis-py reads from a URL's query (it hides them as it hides the userinfo's):
# the server's password, and the one that unlocks an encrypted client key (rediss://).
_QUERY_SECRETS = frozenset({"password", "ssl_password"})

Path = tuple[Any, ...]  # keys and indexes from the document's root
Place = tuple[Path, int, int]  # a secret's path, and its start and end in the file's text


def secrets(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """The secrets of a parsed config, with their paths: every inline API key that is not null,
    and every URL naming a user or a password (`redis://:password@host`, or
    `redis://host?password=…` or `?ssl_password=…`, which redis-py reads too)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "api_key" and item is not None:
                yield (*path, key), item
            else:
                yield from secrets(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from secrets(item, (*path, index))
    elif isinstance(value, str) and "://" in value and _names_a_secret(value):
        yield path, value


def _names_a_secret(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # (an unclosed IPv6 bracket: the config's check says so; not kept meanwhile)
        return True
    # (redis-py unquotes the query's names as parse_qs does)
    return "@" in parts.netloc or not _QUERY_SECRETS.isdisjoint(parse_qs(parts.query))


def blanked(doc: Document, data: bytes) -> Document | None:
    """`doc` (parsed from `data`) to keep: its value `[places, value]`, each secret of the value
    an empty text and its place in `data`'s text; None if a secret is not written there as it
    is (or is not a text, or `data` is not UTF-8)."""
    text = _text(data)
    if text is None:
        return None
    places: list[Place] = []
    value = doc.value
    for path, secret in list(secrets(doc.value)):
        start = text.find(secret) if isinstance(secret, str) else -1
        if start < 0:
            return None
        places.append((path, start, start + len(secret)))
        value = _replaced(value, path, "")
    return Document(doc.path, [places, value], doc.value_marks, doc.key_marks, boolean_words=doc.boolean_words)


def restored(doc: Document, data: bytes) -> Document | None:
    """A document kept by `blanked` with its secrets put back from `data`'s text; None if it is
    not one (a miss: the file is parsed again)."""
    text, kept = _text(data), doc.value
    if not isinstance(kept, list) or len(kept) != 2:
        return None
    places, value = kept
    try:
        for path, start, end in places:
            secret = text[start:end] if text is not None and 0 <= start <= end <= len(text) else None
            if secret is None:
                return None
            value = _replaced(value, tuple(path), secret)
    except (TypeError, ValueError, KeyError, IndexError):
        return None
    doc.value = value
    return doc


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _replaced(value: Any, path: Path, new: Any) -> Any:
    """`value` with what is at `path` replaced by `new`: the containers on the way copied, the
    others shared (the parsed document is used as it is after it is kept)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    if isinstance(value, list):
        return [*value[:head], _replaced(value[head], rest, new), *value[head + 1 :]]
    raise TypeError(f"no container at {head!r}")
