"""The controller's own namespace as hostile input: Links and credentials Secrets.

Scope: `mirror.local._project`, what the controller's watches make of every
Link and credentials Secret of its namespace (written by whoever may write
there). Whatever the document, it never raises and always yields a record:
a Secret's kubeconfig bytes or the reason there are none (never both), a
Link's record with `problem` set when unusable and a `cluster_hint` that is
a DNS label or nothing (it names the mirrors a deleted Link takes away).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.models import Kind
from discovery.project import CREDENTIALS_SECRET_TYPE, Invalid
from mirror.local import Credentials, LinkRecord, _project

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=8,
)
metadata = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=20)},
    optional={
        "namespace": st.one_of(st.text(max_size=10), st.integers()),
        "finalizers": json_values,
        "deletionTimestamp": json_values,
        "uid": json_values,
    },
)


def secret_data() -> st.SearchStrategy[Any]:
    encoded = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
    return st.one_of(
        json_values,
        st.fixed_dictionaries({"kubeconfig": st.one_of(encoded, json_values)}),
    )


@settings(max_examples=100)
@given(
    metadata,
    st.one_of(st.just(CREDENTIALS_SECRET_TYPE), json_values),
    secret_data(),
)
def test_any_secret_becomes_credentials_or_a_reason(
    meta: dict[str, Any], kind: Any, data: Any
) -> None:
    record = _project(Kind.SECRET, {"metadata": meta, "type": kind, "data": data})
    if isinstance(record, Invalid):
        return  # no usable name: nothing is recorded under it
    assert isinstance(record, Credentials)
    assert (record.problem is None) == bool(record.kubeconfig)
    if kind != CREDENTIALS_SECRET_TYPE:
        assert record.problem is not None


@settings(max_examples=100)
@given(
    metadata,
    json_values,
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(
                [
                    "targetClusterName",
                    "clusterCredentialsSecret",
                    "gatewayAddress",
                    "selector",
                    "probeSpec",
                    "excludedLabels",
                ]
            ),
            json_values,
            max_size=6,
        ),
    ),
)
def test_any_link_becomes_a_record_with_a_safe_cluster_hint(
    meta: dict[str, Any], status: Any, spec: Any
) -> None:
    record = _project(Kind.LINK, {"metadata": meta, "spec": spec, "status": status})
    if isinstance(record, Invalid):
        return
    assert isinstance(record, LinkRecord)
    assert record.link is not None
    assert (record.link.spec is None) == (record.link.problem is not None)
    assert record.cluster_hint is None or _DNS_LABEL.match(record.cluster_hint)
    assert all(isinstance(f, str) for f in record.finalizers)


@settings(max_examples=100)
@given(
    st.sampled_from([Kind.SERVICE, Kind.ENDPOINTS]),
    metadata,
    st.one_of(json_values, st.fixed_dictionaries({"ports": json_values, "clusterIP": json_values})),
    st.one_of(
        json_values,
        st.lists(
            st.fixed_dictionaries(
                {"addresses": json_values, "notReadyAddresses": json_values, "ports": json_values}
            ),
            max_size=3,
        ),
    ),
)
def test_any_object_of_ours_projects_without_raising(
    kind: Kind, meta: dict[str, Any], spec: Any, subsets: Any
) -> None:
    """Anyone who may edit our objects may write anything the API server lets through;
    the projection of one odd object must never stop the watch that reads them all."""
    record = _project(kind, {"metadata": meta, "spec": spec, "subsets": subsets})
    assert record is not None
