"""Unit tests for destination.cli.clusters: the table an operator reads.

Scope: one aligned row per cluster with state, age, server, trust domain,
object counts, last sync ("now" when synced, "never" before the first sync)
and the error, with a credential rotation in progress appended to it.
"""

from __future__ import annotations

from destination.cli.clusters import table

NOW = 1_000_000.0


def test_rows_show_state_age_objects_and_errors() -> None:
    text = table(
        [
            {
                "name": "west",
                "state": "synced",
                "since": NOW - 300,
                "server": "https://10.0.2.1:6443",
                "trust_domain": "west.example",
                "objects": {"Service": 4, "EndpointSlice": 5, "Pod": 20},
                "last_synced": NOW,
                "error": None,
                "rotation": "pending: syncing with the new credentials",
            },
            {
                "name": "north",
                "state": "failing",
                "since": NOW - 42,
                "server": None,
                "trust_domain": "north.example",
                "objects": {},
                "last_synced": None,
                "error": "HTTP 403 (forbidden)",
                "rotation": None,
            },
        ],
        now=NOW,
    )
    header, west, north = text.splitlines()
    assert header.split()[:3] == ["CLUSTER", "STATE", "FOR"]
    assert west.split()[:7] == [
        "west",
        "synced",
        "5m",
        "https://10.0.2.1:6443",
        "west.example",
        "4/5/20",
        "now",
    ]
    assert west.endswith("(credentials pending: syncing with the new credentials)")
    assert north.split()[:7] == ["north", "failing", "42s", "-", "north.example", "0/0/0", "never"]
    assert north.endswith("HTTP 403 (forbidden)")
    # Columns line up: every row starts its STATE column at the same offset.
    assert {line.index(word) for line, word in ((header, "STATE"), (west, "synced"))} == {
        north.index("failing")
    }


def test_escape_sequences_from_the_server_are_shown_not_executed() -> None:
    """Hardening #16: errors quote remote responses; they reached the terminal raw."""
    text = table(
        [
            {
                "name": "west\x1b]0;pwned\x07",
                "state": "failing",
                "since": NOW,
                "server": "https://10.0.2.1:6443",
                "trust_domain": "west\u202eexample",
                "objects": {},
                "last_synced": None,
                "error": "HTTP 500: \x1b[2J\x1b[31mfake\r\nsecond line",
                "rotation": None,
            }
        ],
        now=NOW,
    )
    assert not any(ch in text for ch in "\x1b\x07\r\u202e")
    assert len(text.splitlines()) == 2  # header and one row: no injected line breaks
    assert "\\x1b[2J" in text and "\\u202e" in text
