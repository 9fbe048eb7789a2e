"""A config holding a secret (an inline API key, a URL with a password) is kept in the cache
without it: the secret's place in the file's text is kept, and the secret is read back from the
file at the next start, which parses no YAML; no cache file holds the secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulesd import yamldoc
from rulesd.config import load_config
from rulesd.config_secrets import blanked, restored, secrets
from rulesd.document import Document
from rulesd.errors import ConfigError
from rulesd.rules.cache import RuleCache

SECRETS = [
    "opsgenie: {api_key: s3cret, alert_url: 'http://127.0.0.1:9/v2/alerts'}",
    'opsgenie:\n  api_key: "s3cret"\n  alert_url: http://127.0.0.1:9/v2/alerts',
    "opsgenie: {api_key_file: KEY}\nstate: {backend: redis, url: 'redis://:s3cret@127.0.0.1:9/0'}",
    "opsgenie: {api_key_file: KEY, alert_url: 'http://rulesd:s3cret@127.0.0.1:9/v2/alerts'}",
    "opsgenie: {api_key_file: KEY}\nstate: {backend: redis, url: 'redis://127.0.0.1:9/0?password=s3cret'}",
    "opsgenie: {api_key_file: KEY}\nstate: {backend: redis, url: 'rediss://127.0.0.1:9/0?ssl_password=s3cret'}",
    # Two secrets, one of them a text found earlier in the file (as a part of another value).
    "# s3cr\nopsgenie: {api_key: s3cr}\nstate: {backend: redis, url: 'redis://:s3cret@127.0.0.1:9/0'}",
]


def _config(tmp_path: Path, secret: str) -> str:
    (tmp_path / "key").write_text("k\n")
    path = tmp_path / "rulesd.yaml"
    path.write_text("state_dir: st\nsource: {type: stdin}\n" + secret.replace("KEY", str(tmp_path / "key")) + "\n")
    return str(path)


def _load(path: str, cache: RuleCache) -> object:
    try:
        config = load_config(path, environ={}, cache=cache)
    except ConfigError as exc:
        return str(exc)
    return (config, config.opsgenie.api_key, config.state)


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths parsed as YAML from now on."""
    parsed: list[str] = []
    parse = yamldoc.parse_yaml_bytes

    def counted(data: bytes, path: str, **kwargs: bool) -> Document:
        parsed.append(path)
        return parse(data, path, **kwargs)

    monkeypatch.setattr(yamldoc, "parse_yaml_bytes", counted)
    return parsed


@pytest.mark.parametrize("secret", SECRETS)
def test_a_config_holding_a_secret_is_read_back_from_the_cache_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    path, cache = _config(tmp_path, secret), RuleCache(tmp_path / "cache")
    parsed = _parses(monkeypatch)
    first, again = _load(path, cache), _load(path, cache)
    assert [path] == parsed  # the second start read no YAML
    assert first == again  # the same config, its secrets too (or the same error, at the same line)
    assert 1 == len(list((tmp_path / "cache").glob("*.bin")))
    assert all(b"s3cr" not in entry.read_bytes() for entry in (tmp_path / "cache").iterdir())


def test_a_secret_not_written_as_it_is_keeps_the_config_out_of_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An escape in a quoted key: its value is nowhere in the file's text, so the document is
    parsed at every start, as before (nothing is kept)."""
    path = _config(tmp_path, 'opsgenie: {api_key: "s3\\x63ret", alert_url: "http://127.0.0.1:9/v2/alerts"}')
    cache = RuleCache(tmp_path / "cache")
    parsed = _parses(monkeypatch)
    keys = {load_config(path, environ={}, cache=cache).opsgenie.api_key for _ in range(2)}
    assert ({"s3cret"}, [path, path]) == (keys, parsed)
    assert not (tmp_path / "cache").exists() or [] == list((tmp_path / "cache").iterdir())


def test_a_key_edited_in_the_file_is_the_one_read(tmp_path: Path) -> None:
    path, cache = _config(tmp_path, SECRETS[0]), RuleCache(tmp_path / "cache")
    assert "s3cret" == load_config(path, environ={}, cache=cache).opsgenie.api_key
    Path(path).write_text(Path(path).read_text().replace("s3cret", "0ther-key"))
    assert ["0ther-key"] * 2 == [load_config(path, environ={}, cache=cache).opsgenie.api_key for _ in range(2)]


def test_a_kept_document_whose_places_do_not_fit_the_file_is_a_miss() -> None:
    doc = Document("c.yaml", {"opsgenie": {"api_key": "s3cret"}})
    data = b"opsgenie: {api_key: s3cret}\n"
    kept = blanked(doc, data)
    assert kept is not None and [[(("opsgenie", "api_key"), 20, 26)], {"opsgenie": {"api_key": ""}}] == kept.value
    assert {"opsgenie": {"api_key": "s3cret"}} == doc.value  # the parsed document is left as it was
    for damaged in [
        [[(("opsgenie", "api_key"), 20, 99)], {"opsgenie": {"api_key": ""}}],  # past the text's end
        [[(("opsgenie", "nokey"), 20, 26)], {"opsgenie": {"api_key": ""}}],
        [[(("opsgenie", "api_key", 3), 20, 26)], {"opsgenie": {"api_key": ""}}],
        [[("x",)], {}],
        {"opsgenie": {}},
    ]:
        assert restored(Document("c.yaml", damaged), data) is None
    assert restored(Document("c.yaml", kept.value), b"\xff") is None  # not UTF-8


_TEXTS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_URLS = st.sampled_from(["redis://:pw@h", "http://u@h/", "https://h/?password=x"])
_KEYS = st.sampled_from(["api_key", "url", "a"])
_VALUES = st.recursive(
    st.none() | st.integers() | _TEXTS | _URLS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_VALUES, _TEXTS, _TEXTS)
def test_blanked_then_restored_is_the_document(value: object, before: str, after: str) -> None:
    """Whatever the document and wherever its secrets stand in the text: a document kept is the
    same once restored, and holds none of its secrets' texts but where they were."""
    found = [secret for _, secret in secrets(value)]
    data = (before + "".join(map(str, found)) + after).encode()
    kept = blanked(Document("c.yaml", value), data)
    if any(not isinstance(secret, str) for secret in found):
        assert kept is None
        return
    assert kept is not None
    assert value == restored(Document("c.yaml", kept.value), data).value  # type: ignore[union-attr]
    assert [] == [secret for _, secret in secrets(kept.value[1]) if secret]  # type: ignore[index]
