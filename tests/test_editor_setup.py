"""The README's editor set-up, in the real yaml-language-server: schemas written by `rulesd schema
--write`, the VS Code `yaml.schemas` settings and the `$schema` modeline exactly as the README
shows them, on the repository's example files and on files with mistakes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.run_cli import rulesd_cli
from tests.yaml_language_server import YamlLanguageServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_settings() -> dict[str, list[str]]:
    """The `yaml.schemas` mapping of the README's VS Code settings snippet."""
    block = next(b for b in re.findall(r"```json\n(.*?)```", README, re.S) if '"yaml.schemas"' in b)
    schemas: dict[str, list[str]] = json.loads(block)["yaml.schemas"]
    return schemas


def readme_modeline() -> str:
    """The README's `# yaml-language-server: $schema=` line."""
    found = re.search(r"^# yaml-language-server: \$schema=\S+$", README, re.M)
    assert found is not None
    return found.group(0)


@pytest.fixture
def editor(tmp_path: Path) -> Iterator[tuple[YamlLanguageServer, Path]]:
    """A rules repository with the schemas `rulesd schema --write schemas/` writes, open in the
    language server with the README's settings (the schema store, which would go online, off)."""
    workspace = tmp_path
    written = rulesd_cli("schema", "--write", "schemas/", cwd=workspace)
    assert 0 == written.returncode, written.stderr
    settings = {"validate": True, "schemaStore": {"enable": False}, "schemas": readme_settings()}
    server = YamlLanguageServer(workspace, settings)
    yield server, workspace
    server.close()


def test_the_repository_s_rules_tests_and_configs_have_no_problems(editor: tuple[YamlLanguageServer, Path]) -> None:
    """Every example rule file and rule test, and the shipped configurations, open clean: the
    settings give each its schema, and rule tests are not checked as rules."""
    server, workspace = editor
    files = {f"rules/{p.name}": p for p in sorted((ROOT / "rules").glob("*.yaml"))}
    files["rulesd.yaml"] = ROOT / "packaging" / "rulesd.yaml"
    assert any(name.endswith(".test.yaml") for name in files)
    reported = {name: server.diagnostics(workspace / name, path.read_text()) for name, path in files.items()}
    assert {name: [] for name in files} == reported


def test_mistakes_are_reported_at_their_line(editor: tuple[YamlLanguageServer, Path]) -> None:
    """A rule file, a rule test and a configuration with mistakes get problems on the lines of
    the mistakes, each from its own schema."""
    server, workspace = editor
    rule = "rules:\n  - name: r\n    match: {level: error}\n    thresold: {count: 5}\n    alert: {priority: P0}\n"
    test = "rule_files: [r.yaml]\ntests:\n  - name: t\n    evnts: []\n    expect_alerts: []\n"
    config = "rules: [rules]\nsorce: {type: stdin}\n"
    assert [4, 5] == [line for line, _ in server.diagnostics(workspace / "rules" / "bad.yaml", rule)]
    assert [(4, "Property evnts is not allowed.")] == [
        d for d in server.diagnostics(workspace / "rules" / "bad.test.yaml", test) if "evnts" in d[1]
    ]
    assert [(2, "Property sorce is not allowed.")] == server.diagnostics(workspace / "rulesd.yaml", config)


def test_the_modeline_names_the_schema_of_a_file_no_setting_covers(editor: tuple[YamlLanguageServer, Path]) -> None:
    """A file outside the mapped paths is checked against the schema its modeline names."""
    server, workspace = editor
    text = f"{readme_modeline()}\nname: r\nmatch: {{level: error}}\nthrotle: 5m\n"
    assert [(4, "Property throtle is not allowed.")] == server.diagnostics(workspace / "elsewhere" / "r.yaml", text)
    clean = f"{readme_modeline()}\nname: r\nmatch: {{level: error}}\nthrottle: 5m\n"
    assert [] == server.diagnostics(workspace / "elsewhere" / "ok.yaml", clean)
