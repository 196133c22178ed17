"""Property tests: any path or context token a client sends is parsed safely (hardening #8).

Scope: `destination.authority`. `parse_get_target` returns a target or raises
`InvalidAuthority` (never anything else), with a short message whatever the
input; what it returns fits DNS limits. `parse_context_token` never raises,
returns bounded fields and a bounded reason. Inputs: arbitrary text, text
shaped like authorities (labels, dots, colons, brackets, digits), huge inputs,
and arbitrary JSON documents as tokens.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from destination.authority import (
    MAX_HOST_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_TOKEN_FIELD_LENGTH,
    InvalidAuthority,
    LookupTarget,
    parse_context_token,
    parse_get_target,
)

MESSAGE_LIMIT = 400
LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=0, max_size=70)
AUTHORITY_LIKE = st.builds(
    lambda labels, suffix, port: ".".join(labels) + suffix + port,
    st.lists(LABEL, min_size=0, max_size=6),
    st.sampled_from([".svc.cluster.local", ".svc.cluster.local.", "", ".svc", "]", "["]),
    st.sampled_from(["", ":80", ":0", ":65536", ":080", ":" + "0" * 500 + "1", ":", "::80", ":x"]),
)
HUGE = st.builds(
    lambda char, n, tail: char * n + tail,
    st.sampled_from(["w", ".", ":", "[", "0", "\u00e9"]),
    st.integers(min_value=250, max_value=300_000),
    st.sampled_from(["", ".default.svc.cluster.local:80", ":80"]),
)
PATHS = st.text(max_size=300) | AUTHORITY_LIKE | HUGE

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
    | st.text(max_size=1, alphabet="n").map(lambda s: s * 10_000),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["ns", "nodeName", "pod", "NodeName", "NS", "other"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=500)
@given(path=PATHS)
def test_a_path_is_a_bounded_target_or_an_invalid_authority_with_a_short_message(
    path: str,
) -> None:
    try:
        target = parse_get_target(path, cluster_domain="cluster.local")
    except InvalidAuthority as err:
        assert len(str(err)) < MESSAGE_LIMIT
        assert len(err.path) < MESSAGE_LIMIT and len(err.reason) < 2 * MESSAGE_LIMIT
        return
    assert isinstance(target, LookupTarget)
    assert 0 < target.port <= 65535
    service = target.service
    host_labels = [service.name, service.namespace] + (
        [service.hostname] if service.hostname else []
    )
    assert all(0 < len(label) <= MAX_LABEL_LENGTH for label in host_labels)
    assert len(".".join(host_labels)) <= MAX_HOST_LENGTH


@settings(max_examples=500)
@given(token=st.text(max_size=400) | HUGE | JSON.map(json.dumps))
def test_a_context_token_never_raises_and_is_bounded(token: str) -> None:
    parsed, reason = parse_context_token(token)
    for value in (parsed.ns, parsed.node_name, parsed.pod):
        assert len(value) <= MAX_TOKEN_FIELD_LENGTH
    assert reason is None or len(reason) < 2 * MESSAGE_LIMIT


@settings(max_examples=200)
@given(document=JSON)
def test_a_json_token_with_string_fields_keeps_them(document: Any) -> None:
    """A well-formed token is read as Go would read it (bounded fields kept)."""
    parsed, reason = parse_context_token(json.dumps(document))
    if isinstance(document, dict) and reason is None:
        node = document.get("nodeName")
        spellings = [key for key in document if key.lower() == "nodename"]
        if isinstance(node, str) and spellings == ["nodeName"]:
            assert parsed.node_name == node
