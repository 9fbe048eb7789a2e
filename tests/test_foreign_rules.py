"""Rules written in the words of the tools users migrate from (ElastAlert2, Sigma, fail2ban)
and YAML's pitfalls, as the real `rulesd check` reports them: each at its line, saying what
to write instead."""

from __future__ import annotations

from pathlib import Path

from tests.test_rule_mistakes import check


def test_elastalert_keys_of_a_rule(tmp_path: Path) -> None:
    """ElastAlert's keys of a rule (its type, index, num_events, timeframe, query_key, filter,
    realert) each say what rulesd writes instead, with the rule's own values where they fit; its
    missing match is not said again."""
    text = """\
rules:
  - name: ssh-brute
    type: frequency
    index: logs-*
    num_events: 8
    timeframe: {minutes: 15}
    query_key: user
    filter:
      - term: {event: login_failed}
    realert: {hours: 1}
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert [
        (
            "DIR/r.yaml:3:5: error: rules[0].type: a rule's kind is the key it has, not a type: threshold "
            "(ElastAlert's frequency), distinct (cardinality), absence (flatline), new_value (new_term), "
            "sequence, or none to fire on every match (any)"
        ),
        (
            "DIR/r.yaml:4:5: error: rules[0].index: rulesd reads the events of the sources in rulesd.yaml, not "
            "an index: leave it out (to take one source's events, test source_name in match)"
        ),
        (
            "DIR/r.yaml:5:5: error: rules[0].num_events: ElastAlert's num_events is a threshold's count: "
            "threshold: {count: 8, window: 5m}"
        ),
        (
            "DIR/r.yaml:6:5: error: rules[0].timeframe: ElastAlert's timeframe is the window of the rule's "
            "kind: threshold: {count: 5, window: 15m}"
        ),
        (
            "DIR/r.yaml:7:5: error: rules[0].query_key: ElastAlert's query_key is the group_by of the rule's "
            "kind: threshold: {count: 5, window: 5m, group_by: [user]}"
        ),
        (
            "DIR/r.yaml:8:5: error: rules[0].filter: ElastAlert's filter (Elasticsearch's query DSL) is "
            "rulesd's match, a mapping of field paths and their values or operators: {event: login_failed, "
            "http.status: {gte: 500}}"
        ),
        (
            "DIR/r.yaml:10:5: error: rules[0].realert: ElastAlert's realert is rulesd's throttle, a duration: "
            "throttle: 1h"
        ),
        ("FAILED: 1 file(s), 0 rule(s), 7 error(s), 0 warning(s)"),
    ] == output.splitlines()


def test_elastalert_durations_no_length_can_be_made_of(tmp_path: Path) -> None:
    """ElastAlert's mapping of units as a duration is said with what to write, also where its
    number is no length (`.inf`, which stopped the check with a traceback, a text, a negative
    one) or not a whole number of its unit (`{minutes: 1.5}` is 90 seconds, as ElastAlert
    reads it), and as a foreign key's value."""
    text = """\
rules:
  - name: inf
    match: {event: a}
    threshold: {count: 2, window: {minutes: .inf}}
  - name: text
    match: {event: a}
    threshold: {count: 2, window: {minutes: soon}}
  - name: negative
    match: {event: a}
    threshold: {count: 2, window: {hours: -1}}
  - name: fraction
    match: {event: a}
    threshold: {count: 2, window: {minutes: 1.5}}
  - name: foreign
    match: {event: a}
    timeframe: {minutes: .inf}
    realert: {minutes: 2.5}
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    mapping = "a duration is written as one string here, not ElastAlert's mapping of units: write"
    assert [
        f"DIR/r.yaml:4:35: error: rules[0].threshold.window: {mapping} a number and its unit, such as 5m",
        f"DIR/r.yaml:7:35: error: rules[1].threshold.window: {mapping} a number and its unit, such as 5m",
        f"DIR/r.yaml:10:35: error: rules[2].threshold.window: {mapping} a number and its unit, such as 5m",
        f"DIR/r.yaml:13:35: error: rules[3].threshold.window: {mapping} 1m30s",
        (
            "DIR/r.yaml:16:5: error: rules[4].timeframe: ElastAlert's timeframe is the window of the rule's "
            "kind: threshold: {count: 5, window: 5m}"
        ),
        (
            "DIR/r.yaml:17:5: error: rules[4].realert: ElastAlert's realert is rulesd's throttle, a duration: "
            "throttle: 2m30s"
        ),
    ] == output.splitlines()[:-1]


def test_elastalert_keys_of_a_kind_and_of_an_alert(tmp_path: Path) -> None:
    """ElastAlert's keys under a rule kind or the alert, its mapping of duration units, its
    list of alerters and a list of conditions say what to write instead; the keys they stand for
    are not said to be missing."""
    text = """\
rules:
  - name: ssh-brute
    match: {event: login_failed}
    threshold: {num_events: 5, timeframe: 5m, query_key: [source.ip]}
    alert: {alert_text: "brute force", opsgenie_teams: [security]}
  - name: spray
    match: {event: login_failed}
    distinct: {cardinality_field: user, max_cardinality: 19, window: {minutes: 5}}
  - name: beats
    match: {event: heartbeat}
    absence: {window: 5m, query_key: [host]}
  - name: any-list
    match:
      - event: login_failed
      - event: login_denied
    alert: [opsgenie]
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert [
        (
            "DIR/r.yaml:4:17: error: rules[0].threshold.num_events: ElastAlert's num_events is a threshold's "
            "count: count: 5"
        ),
        (
            "DIR/r.yaml:4:32: error: rules[0].threshold.timeframe: ElastAlert's timeframe is a threshold's "
            "window: window: 5m"
        ),
        (
            "DIR/r.yaml:4:47: error: rules[0].threshold.query_key: ElastAlert's query_key is group_by: "
            "group_by: [source.ip]"
        ),
        (
            "DIR/r.yaml:5:13: error: rules[0].alert.alert_text: ElastAlert's alert_text is alert.message, a "
            "template ({field})"
        ),
        (
            "DIR/r.yaml:5:40: error: rules[0].alert.opsgenie_teams: ElastAlert's opsgenie_teams are responders: "
            "responders: [{type: team, name: ops}]"
        ),
        (
            "DIR/r.yaml:8:16: error: rules[1].distinct.cardinality_field: ElastAlert's cardinality_field is "
            "distinct's field: field: user"
        ),
        (
            "DIR/r.yaml:8:41: error: rules[1].distinct.max_cardinality: distinct fires when count different "
            "values are seen (ElastAlert's max_cardinality fires above it): count: 20"
        ),
        (
            "DIR/r.yaml:8:70: error: rules[1].distinct.window: a duration is written as one string here, not "
            "ElastAlert's mapping of units: write 5m"
        ),
        ("DIR/r.yaml:11:27: error: rules[2].absence.query_key: ElastAlert's query_key is group_by: group_by: [host]"),
        (
            "DIR/r.yaml:14:7: error: rules[3].match: match is a mapping of field paths to values or operators, "
            "all of which must hold; for any one of several conditions to hold, write match: {any: [{...}, "
            "{...}]}"
        ),
        (
            "DIR/r.yaml:16:12: error: rules[3].alert: alert is a mapping (message, priority, tags, responders, "
            "...), not ElastAlert's list of alerters: rulesd pages through OpsGenie, as rulesd.yaml says"
        ),
        ("FAILED: 1 file(s), 0 rule(s), 11 error(s), 0 warning(s)"),
    ] == output.splitlines()


def test_sigma_keys_of_a_rule(tmp_path: Path) -> None:
    """Sigma's title, logsource, detection and level say where they go (level as the priority
    it is); the missing name is not said again."""
    text = """\
title: SSH brute force
logsource: {product: linux, service: sshd}
detection:
  selection: {event: login_failed}
  condition: selection
level: critical
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert [
        (
            "DIR/r.yaml:1:1: error: title: Sigma's title is the rule's name (letters, digits, '.', '_', '-') "
            "and its description"
        ),
        (
            "DIR/r.yaml:2:1: error: logsource: rulesd matches the events of the sources in rulesd.yaml: Sigma's "
            "logsource is a test of their fields in match (service: sshd, or source_name: auth for a named "
            "source)"
        ),
        (
            "DIR/r.yaml:3:1: error: detection: Sigma's detection is rulesd's match: the selection's fields go "
            "directly under match, and its condition's and, or and not are all: [...], any: [...] and not: "
            "{...}"
        ),
        (
            "DIR/r.yaml:6:1: error: level: Sigma's level is alert.priority (critical P1, high P2, medium P3, "
            "low P4, informational P5): alert: {priority: P1}"
        ),
        ("FAILED: 1 file(s), 0 rule(s), 4 error(s), 0 warning(s)"),
    ] == output.splitlines()


def test_sigma_metadata_of_a_rule(tmp_path: Path) -> None:
    """Sigma's status, author, references, date, falsepositives… say, each at its line, what
    rulesd writes instead: nothing (a comment or the description), or enabled: false for a
    deprecated rule."""
    text = """\
rules:
  - name: ssh-brute-force
    status: experimental
    author: Alice
    references: [https://example.com/ssh]
    date: 2024/01/01
    falsepositives: [a scanner]
    match: {event: login_failed}
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    kept = "in description or in a YAML comment"
    assert [
        (
            "DIR/r.yaml:3:5: error: rules[0].status: a rule has no status: leave Sigma's status out, or, for a rule "
            "kept but meant never to fire (deprecated, unsupported), write enabled: false"
        ),
        f"DIR/r.yaml:4:5: error: rules[0].author: a rule has no author: keep Sigma's author {kept} (# author: ...)",
        (
            "DIR/r.yaml:5:5: error: rules[0].references: a rule has no references: keep Sigma's references "
            f"{kept} (# references: ...)"
        ),
        f"DIR/r.yaml:6:5: error: rules[0].date: a rule has no date: keep Sigma's date {kept} (# date: ...)",
        (
            "DIR/r.yaml:7:5: error: rules[0].falsepositives: Sigma's falsepositives are prose: keep them in "
            "description, or leave such events out in match with not: {...}"
        ),
        "FAILED: 1 file(s), 0 rule(s), 5 error(s), 0 warning(s)",
    ] == output.splitlines()


def test_a_sigma_cidr_modifier_takes_its_list_whole(tmp_path: Path) -> None:
    """`source.ip|cidr: [...]` is one cidr test of a list of networks (not any: [...] of one
    test per network, as other modifiers' lists are), and a named list stays named."""
    text = """\
rules:
  - name: inside
    match:
      source.ip|cidr:
        - 10.0.0.0/8
        - 192.168.0.0/16
  - name: office
    match: {source.ip|cidr: $office}
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    sigma = "Sigma's field|modifier is not rulesd's: as written, it tests a field named 'source.ip|cidr'; write"
    assert [
        f'DIR/r.yaml:4:7: error: rules[0].match["source.ip|cidr"]: {sigma} source.ip: {{cidr: [10.0.0.0/8, '
        "192.168.0.0/16]}",
        f"DIR/r.yaml:8:13: error: rules[1].match[\"source.ip|cidr\"]: {sigma} source.ip: {{cidr: '$office'}}",
        "FAILED: 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)",
    ] == output.splitlines()


def test_sigma_modifiers_and_selections(tmp_path: Path) -> None:
    """Sigma's field|modifier keys, which tested a field of that name without a word, and its
    selections and condition under match are errors that say how to write them."""
    text = """\
rules:
  - name: sudo-shell
    match:
      message|contains: COMMAND=/bin/bash
      path|endswith: [.php, .jsp]
      user|re: '^adm'
      args|contains|all: [sudo, root]
  - name: selection
    match:
      selection: {event: login_failed}
      filter: {user: root}
      condition: selection and not filter
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert [
        (
            'DIR/r.yaml:4:7: error: rules[0].match["message|contains"]: Sigma\'s field|modifier is not '
            "rulesd's: as written, it tests a field named 'message|contains'; write message: {contains: "
            "'COMMAND=/bin/bash'}"
        ),
        (
            "DIR/r.yaml:5:7: error: rules[0].match[\"path|endswith\"]: Sigma's field|modifier is not rulesd's: "
            "as written, it tests a field named 'path|endswith'; write any: [{path: {endswith: .php}}, {path: "
            "{endswith: .jsp}}]"
        ),
        (
            "DIR/r.yaml:6:7: error: rules[0].match[\"user|re\"]: Sigma's field|modifier is not rulesd's: as "
            "written, it tests a field named 'user|re'; write user: {regex: '^adm'}"
        ),
        (
            'DIR/r.yaml:7:7: error: rules[0].match["args|contains|all"]: Sigma\'s field|modifier is not '
            "rulesd's: as written, it tests a field named 'args|contains|all'; write all: [{args: {contains: "
            "sudo}}, {args: {contains: root}}]"
        ),
        (
            "DIR/r.yaml:10:7: error: rules[1].match.selection: Sigma's selection 'selection': its fields go "
            "directly under match (event: login_failed)"
        ),
        (
            "DIR/r.yaml:11:7: error: rules[1].match.filter: Sigma's selection 'filter': its fields go directly "
            "under match (user: root)"
        ),
        (
            "DIR/r.yaml:12:7: error: rules[1].match.condition: Sigma's condition has no place here: write the "
            "fields of its selections (selection, filter) directly under match (all must hold); its and, or and "
            "not are all: [...], any: [...] and not: {...}"
        ),
        ("FAILED: 1 file(s), 0 rule(s), 7 error(s), 0 warning(s)"),
    ] == output.splitlines()


def test_elasticsearch_query_dsl_and_nested_fields(tmp_path: Path) -> None:
    """Elasticsearch's query DSL under match, and a nested mapping of fields, say how a
    condition is written; fields that merely share such a name (a URL's query, a condition's
    text) are still fields, and a misspelt operator is still a did-you-mean."""
    text = """\
rules:
  - name: dsl
    match:
      range: {status: {gte: 500}}
      term: {event: login_failed}
      bool: {must: [{term: {event: x}}]}
      query_string: "event:login_failed AND user:root"
      http: {status: {gte: 500}}
  - name: fields-that-are-fields
    match:
      query: "sort:desc"
      query_string: "id=5&sort=name:asc"
      condition: "rain or snow"
      level: {regx: error}
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert [
        (
            "DIR/r.yaml:4:7: error: rules[0].match.range: Elasticsearch's query DSL (range) is not a condition "
            "here: write status: {gte: 500}"
        ),
        (
            "DIR/r.yaml:5:7: error: rules[0].match.term: Elasticsearch's query DSL (term) is not a condition "
            "here: write event: login_failed"
        ),
        (
            "DIR/r.yaml:6:7: error: rules[0].match.bool: Elasticsearch's query DSL (bool) is not a condition "
            "here: its must (and filter), should and must_not are all: [...], any: [...] and not: {...}"
        ),
        (
            "DIR/r.yaml:7:7: error: rules[0].match.query_string: Elasticsearch's query DSL (query_string) is "
            "not a condition here: match takes field paths and their values or operators: {event: login_failed, "
            "http.status: {gte: 500}}"
        ),
        (
            "DIR/r.yaml:8:7: error: rules[0].match.http: 'http' is tested with operators (cidr, contains, "
            "endswith, equals, ...), not fields: to test its field status, write the path dotted (http.status: "
            "...)"
        ),
        ("DIR/r.yaml:14:15: error: rules[1].match.level.regx: unknown key 'regx'; did you mean 'regex'?"),
        ("FAILED: 1 file(s), 0 rule(s), 6 error(s), 0 warning(s)"),
    ] == output.splitlines()


def test_fail2ban_keys(tmp_path: Path) -> None:
    """fail2ban's failregex (with its <HOST> made a class), ignoreregex, maxretry, findtime
    (seconds) and bantime say what rulesd writes instead."""
    text = """\
name: ssh-brute
failregex: '^Failed password for .* from <HOST> port \\d+'
ignoreregex: 'from 10\\.'
maxretry: 5
findtime: 600
bantime: 1h
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert [
        (
            "DIR/r.yaml:2:1: error: failregex: fail2ban's failregex is a regex in match: match: {message: "
            "{regex: '^Failed password for .* from \\S+ port \\d+'}}"
        ),
        (
            "DIR/r.yaml:3:1: error: ignoreregex: fail2ban's ignoreregex is a negated test in match: match: "
            "{not: {message: {regex: 'from 10\\.'}}}"
        ),
        (
            "DIR/r.yaml:4:1: error: maxretry: fail2ban's maxretry is a threshold's count: threshold: {count: 5, "
            "window: 5m}"
        ),
        (
            "DIR/r.yaml:5:1: error: findtime: fail2ban's findtime is the window of the rule's kind: threshold: "
            "{count: 5, window: 10m}"
        ),
        (
            "DIR/r.yaml:6:1: error: bantime: rulesd pages, it does not ban: fail2ban's bantime is nearest to "
            "throttle (no page again for the group for that long): throttle: 1h"
        ),
        ("FAILED: 1 file(s), 0 rule(s), 5 error(s), 0 warning(s)"),
    ] == output.splitlines()


def test_regexes_with_fail2ban_tags_or_double_quoted_escapes(tmp_path: Path) -> None:
    """A rule regex with fail2ban's <HOST>, which matched the text <HOST>, and one whose
    double-quoted backslash-b YAML made a backspace, both never fired: errors at the regex that
    say what to write."""
    text = """\
rules:
  - name: host
    match:
      message: {regex: 'Failed password for .* from <HOST> port \\d+'}
  - name: word
    match:
      message: {regex: "\\bfailed\\b"}
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert [
        (
            "DIR/r.yaml:4:24: error: rules[0].match.message.regex: fail2ban's <HOST> is not a regex here: it "
            "matches the text <HOST>; write \\S+ in its place (and name the group in the source's pattern, "
            "(?P<host>\\S+), to group by it)"
        ),
        (
            "DIR/r.yaml:7:24: error: rules[1].match.message.regex: the regex holds the control character "
            "U+0008, which YAML makes of \\b in double quotes: write the regex in single quotes ('...\\b...'), "
            "where a backslash is itself"
        ),
        ("FAILED: 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)"),
    ] == output.splitlines()


def test_a_modifiers_advice_writes_yamls_null_and_booleans(tmp_path: Path) -> None:
    """The value in the advice is written as YAML reads it back: `null`, `true`, not Python's
    `None`, `True` (which YAML would read as the text 'None')."""
    text = """\
rules:
  - name: sudo-shell
    match:
      comment|contains: ~
      admin|contains: yes
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert "write comment: {contains: null}" in output, output
    assert "write admin: {contains: true}" in output, output
