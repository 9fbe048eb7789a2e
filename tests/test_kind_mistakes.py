"""Mistakes in correlation rules (distinct, sequence, absence, new_value, resolve) that made a
rule silently never fire or page less than it seems to: each an error (or, where the rule still
fires, a warning) of the real `rulesd check` at its line, saying what to write instead."""

from __future__ import annotations

from pathlib import Path

from tests.test_rule_mistakes import assert_one_error_each, check

HEAD = "rules:\n  - name: r\n"


def test_a_time_written_under_another_kinds_name_says_this_kinds(tmp_path: Path) -> None:
    """`within` under a threshold, `for` under an absence, `window` under a sequence, `within`
    under an absent step, `for` under resolve: each kind has its own name for its time, and the
    advice said to move the key elsewhere (`within` belongs under 'sequence'), which would not
    make the rule right. The error names this kind's key with the value written, and the key it
    stands for is not said to be missing too."""
    seq = "    sequence:\n      group_by: [host]\n"
    steps = "      steps:\n        - match: {event: a}\n"
    assert_one_error_each(
        tmp_path,
        [
            (
                HEAD + "    match: {event: err}\n    threshold: {count: 5, within: 10m}\n",
                "4:27: error: rules[0].threshold.within: a threshold counts the events of its window: window: 10m",
            ),
            (
                HEAD + "    match: {event: err}\n    threshold: {count: 5, within: 10m, window: 5m}\n",
                "4:27: error: rules[0].threshold.within: a threshold counts the events of its window, written beside "
                "it: leave within out",
            ),
            (
                HEAD + "    match: {event: beat}\n    absence: {for: 90s, group_by: [host]}\n",
                "4:15: error: rules[0].absence.for: an absence pages a group silent for its window: window: 1m30s",
            ),
            (
                HEAD + seq + "      window: 10m\n" + steps + "        - match: {event: b}\n",
                "5:7: error: rules[0].sequence.window: a sequence's steps are bounded by within, from its first "
                "counted event: within: 10m",
            ),
            (
                HEAD + seq + steps + "        - absent: {match: {event: b}, within: 2h}\n",
                "7:39: error: rules[0].sequence.steps[1].absent.within: an absent step waits for its for (within does "
                "not apply to it): for: 2h",
            ),
            (
                HEAD + "    match: {event: err}\n    threshold: {count: 5, window: 5m}\n    resolve: {for: 30m}\n",
                "5:15: error: rules[0].resolve.for: resolve's time is after, how long its group must not fire before "
                "the alert closes: after: 30m",
            ),
            (
                HEAD + "    match: {event: err}\n    threshold: {count: 5, window: 5m}\n    resolve: 30m\n",
                "5:14: error: rules[0].resolve: resolve is a mapping of when to close the alert: resolve: {after: 30m}",
            ),
            (
                HEAD + "    match: {event: login}\n    new_value: {fields: [ip], window: 1d}\n",
                "4:31: error: rules[0].new_value.window: new_value has no window: a value is new when its group has "
                "not seen it before, learn only records values for a while after the start, and forget makes a value "
                "unseen for that long new again: forget: 1d",
            ),
        ],
    )


def test_a_kind_that_the_match_keeps_from_firing_is_an_error(tmp_path: Path) -> None:
    """A distinct rule counting a field its match lets have fewer values than `count` (a list,
    `in`, a named list), or a field the match requires missing, and a new_value rule learning
    such a field, never fire."""
    assert_one_error_each(
        tmp_path,
        [
            (
                "lists:\n  pair: [a, b]\n" + HEAD + "    match: {user: $pair, event: login}\n"
                "    distinct: {field: user, count: 3, window: 5m, group_by: [source.ip]}\n",
                "6:36: error: rules[0].distinct.count: the match lets 'user' have only 2 value(s) (a, b), so 3 "
                "different values are never counted and the rule never fires: write count: 2 or less, or count "
                "another field",
            ),
            (
                HEAD + "    match: {all: [{user: {in: [a, b, c]}}, {user: {equals: a}}]}\n"
                "    distinct: {field: user, count: 2, window: 5m}\n",
                "4:36: error: rules[0].distinct.count: the match lets 'user' have only 1 value(s) (a), so 2 different "
                "values are never counted",
            ),
            (
                HEAD + "    match: {event: login, host: {exists: false}}\n"
                "    distinct: {field: host, count: 2, window: 5m}\n",
                "4:23: error: rules[0].distinct.field: the match requires 'host' to be missing (exists: false), so no "
                "matched event has a value of it and the rule never fires: count a field the matched events have",
            ),
            (
                HEAD + "    match: {ip: {exists: false}}\n    new_value: {fields: [user, ip]}\n",
                "4:32: error: rules[0].new_value.fields[1]: the match requires 'ip' to be missing (exists: false), "
                "so no matched event has a value of it and the rule never fires: learn the values of a field the "
                "matched events have",
            ),
        ],
    )


def test_what_still_fires_but_pages_less_than_it_seems_is_a_warning(tmp_path: Path) -> None:
    """Grouping by a field the match requires missing puts every event in one group; `resolve`
    closing an alert sooner than the throttle lets the group page again leaves a problem that
    comes back meanwhile unpaged. Ignoring case, `in: [a, b]` lets more texts through than two,
    and a count within what the match allows is right: neither draws anything."""
    code, out = check(
        tmp_path,
        HEAD + "    match: {event: err, host: {exists: false}}\n"
        "    threshold: {count: 3, window: 5m, group_by: [service, host]}\n"
        "    throttle: 1h\n    resolve: {after: 15m}\n"
        "  - name: fine\n    match: {user: {in: [a, b], nocase: true}, host: [x, y]}\n"
        "    distinct: {field: user, count: 3, window: 5m}\n    throttle: 10m\n    resolve: {after: 10m}\n"
        "  - name: two\n    match: {host: [x, y]}\n    distinct: {field: host, count: 2, window: 5m}\n",
    )
    assert 0 == code
    assert [
        "DIR/r.yaml:4:59: warning: rules[0].threshold.group_by[1]: the match requires 'host' to be missing (exists: "
        "false), so every event falls in one group, that of the missing field: group by a field the matched events "
        "have, or leave 'host' out",
        "DIR/r.yaml:6:22: warning: rules[0].resolve.after: the alert closes 15m after the group's last firing, but "
        "the throttle holds the group's firings back for 1h after the one paged, and a firing held back while no "
        "alert is open opens none: a problem that comes back after the close and within the throttle is not paged. "
        "Write after: 1h (at least the throttle), or a shorter throttle",
        "OK: 1 file(s), 3 rule(s), 0 error(s), 2 warning(s)",
    ] == out.splitlines()


def test_an_absence_of_groups_its_match_names_but_does_not_expect_is_a_warning(tmp_path: Path) -> None:
    """An absence grouped by host whose match lets host be only web-1 or web-2 watches a host
    only once it is seen: one down since rulesd started is never paged. A warning at the
    group_by, saying the expect to write; all of them expected (a dotted field's too, which
    the expected group holds nested), or a host the match does not pin, draws none."""
    assert (
        0,
        "DIR/r.yaml:4:38: warning: rules[0].absence.group_by[0]: the match lets 'host' be only \"web-1\", "
        '"web-2", and "web-2" is not expected: a group is watched only once seen or expected, so one silent since '
        'rulesd started is never paged. Write expect: [{host: "web-1"}, {host: "web-2"}]\n'
        'DIR/r.yaml:16:38: warning: rules[4].absence.group_by[0]: the match lets \'host\' be only "c", "d", and '
        "none of them is expected: a group is watched only once seen or expected, so one silent since rulesd "
        'started is never paged. Write expect: [{host: "c"}, {host: "d"}]\n'
        "OK: 1 file(s), 5 rule(s), 0 error(s), 2 warning(s)\n",
    ) == check(
        tmp_path,
        HEAD + "    match: {event: beat, host: [web-1, web-2]}\n"
        "    absence: {window: 5m, group_by: [host], expect: [{host: web-1}]}\n"
        "  - name: all\n    match: {event: beat, host: {in: [a, b]}}\n"
        "    absence: {window: 5m, group_by: [host], expect: [{host: a}, {host: b}]}\n"
        "  - name: any\n    match: {event: beat, host: {startswith: web}}\n"
        "    absence: {window: 5m, group_by: [host]}\n"
        "  - name: nested\n    match: {event: beat, labels.host: [a, b]}\n"
        "    absence: {window: 5m, group_by: [labels.host], expect: [{labels.host: a}, {labels.host: b}]}\n"
        "  - name: none\n    match: {event: beat, host: [c, d]}\n    absence: {window: 5m, group_by: [host]}\n",
    )


def test_a_rules_own_number_yaml_reads_as_octal_is_a_warning(tmp_path: Path) -> None:
    """`count: 017` is the octal number 15 to YAML 1.1: the rule fires at the 15th event, and
    nothing said so. A warning at it, saying what to write for either; a duration's says it
    with its unit. Hex and `1_000`, read as what they look like, and decimals draw nothing."""
    code, out = check(
        tmp_path,
        HEAD + "    match: {event: err}\n    threshold: {count: 017, window: 5m, group_by: [host]}\n"
        "    throttle: 0600\n"
        "  - name: s\n    sequence:\n      steps:\n        - {match: {k: 1}, count: 0x10}\n"
        "        - {match: {k: 2}, count: 1_000}\n",
    )
    assert (
        0,
        [
            "DIR/r.yaml:4:24: warning: rules[0].threshold.count: YAML reads the unquoted 017 as the octal number 15: "
            "write 17 if that is meant, else 15",
            "DIR/r.yaml:5:15: warning: rules[0].throttle: 384 has no unit, so it is 384 seconds: write 384s to say so",
            "DIR/r.yaml:5:15: warning: rules[0].throttle: YAML reads the unquoted 0600 as the octal number 384: write "
            "600s if that is meant, else 384s",
            "OK: 1 file(s), 2 rule(s), 0 error(s), 3 warning(s)",
        ],
    ) == (code, out.splitlines())


def test_an_expected_group_without_a_group_by_field_is_warned_about(tmp_path: Path) -> None:
    """`group_by: [host, dc]` expecting `{host: a}` expects the group of events without dc:
    host a's beats, which carry a dc, are another group, so the expected one was paged as never
    seen while host a beat, and check said nothing. A warning at the group (events without the
    field may be what is watched); one naming every field draws none."""
    assert (
        0,
        "DIR/r.yaml:5:51: warning: rules[0].absence.expect[0]: names no dc (group_by is [host, dc]): it expects "
        "the group of events without dc, and an event with one is in another group, so this group is paged as "
        "never seen unless events without dc come; give dc's value\n"
        "OK: 1 file(s), 1 rule(s), 0 error(s), 1 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n  - name: hb\n    match: {kind: beat}\n    absence:\n"
        "      {window: 5m, group_by: [host, dc], expect: [{host: a}, {host: b, dc: x}]}\n",
    )
