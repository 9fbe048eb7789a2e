""".pre-commit-hooks.yaml, run by the real `pre-commit try-repo` against a clone of this repository:
pre-commit builds its own virtualenv from the clone (pip installs rulesd and its dependencies
into it), then runs the hooks in a rules repository of a user's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.run_cli import clean_env

ROOT = Path(__file__).resolve().parent.parent
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "rulesd tests",
    "GIT_AUTHOR_EMAIL": "tests@rulesd.invalid",
    "GIT_COMMITTER_NAME": "rulesd tests",
    "GIT_COMMITTER_EMAIL": "tests@rulesd.invalid",
}
GOOD_RULES = "rules:\n  - name: err\n    match: {level: error}\n    alert: {priority: P2, message: 'error on {host}'}\n"
BAD_RULES = "name: typo\nmatch: {level: error}\nthrotle: 5m\n"
GOOD_TEST = (
    "rule_files: [good.yaml]\ntests:\n  - name: pages\n    events:\n      - {event: {level: error, host: a}}\n"
    "    expect_alerts:\n      - {event: 1, rules: [err], priority: P2}\n"
)
BAD_TEST = GOOD_TEST.replace("name: pages", "name: wrong priority").replace("priority: P2}", "priority: P1}")


def git(*args: str, cwd: Path) -> str:
    """Run git in `cwd`; its standard output."""
    env = clean_env(GIT_IDENTITY)
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def hooks_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding this working tree as it is (uncommitted changes too): what a
    user's pre-commit would clone from rulesd's repository."""
    clone = tmp_path_factory.mktemp("rulesd-clone")
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    git("init", "-q", cwd=clone)
    git("add", "-A", cwd=clone)
    git("commit", "-q", "-m", "snapshot", cwd=clone)
    return clone


def try_repo(hooks_repo: Path, user_repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pre-commit try-repo HOOKS_REPO ARGS` in the user's repository. Each call builds the hooks'
    environment anew in a temporary store (try-repo keeps none), so the tests make two calls."""
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(hooks_repo), *args, "--color", "never"],
        cwd=user_repo,
        env=clean_env(GIT_IDENTITY),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """A user's repository of rules: a good rule file and its test, and a YAML file that is not rules."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "good.yaml").write_text(GOOD_RULES)
    (tmp_path / "rules" / "good.test.yaml").write_text(GOOD_TEST)
    (tmp_path / "docker-compose.yml").write_text("services: {app: {image: app}}\n")
    git("init", "-q", cwd=tmp_path)
    git("add", "-A", cwd=tmp_path)
    return tmp_path


def test_hooks_pass_on_good_rules_and_leave_other_yaml_alone(hooks_repo: Path, user_repo: Path) -> None:
    """Both hooks pass on a valid rule file and a passing rule test; a YAML file outside the rules
    directory is not handed to `rulesd check`."""
    result = try_repo(hooks_repo, user_repo, "--all-files", "--verbose")
    output = result.stdout + result.stderr
    assert 0 == result.returncode, output
    assert re.search(r"^rulesd check\.+Passed$", output, re.M) and re.search(r"^rulesd test\.+Passed$", output, re.M)
    assert "OK: 1 file(s), 1 rule(s), 0 error(s), 0 warning(s)" in output  # docker-compose.yml not given
    assert "rule tests: 1 passed, 0 failed, 0 invalid" in output


def test_hooks_fail_on_a_bad_rule_file_and_a_failing_test(hooks_repo: Path, user_repo: Path) -> None:
    """`rulesd-check` fails on a rule file with an error, naming path:line:col; `rulesd-test` fails
    on a failing rule test, printing expected and actual."""
    (user_repo / "rules" / "bad.yaml").write_text(BAD_RULES)
    (user_repo / "rules" / "bad.test.yaml").write_text(BAD_TEST)
    git("add", "-A", cwd=user_repo)
    result = try_repo(hooks_repo, user_repo, "--files", "rules/bad.yaml", "rules/bad.test.yaml")
    output = result.stdout + result.stderr
    assert 1 == result.returncode, output
    assert re.search(r"^rulesd check\.+Failed$", output, re.M) and re.search(r"^rulesd test\.+Failed$", output, re.M)
    assert "rules/bad.yaml:3:1: error: throtle: unknown key 'throtle'; did you mean 'throttle'?" in output
    assert "FAIL rules/bad.test.yaml:3:5: wrong priority" in output
    assert "priority: expected 'P1', got 'P2'" in output
