"""The side-by-side mode's logic: ratios, the cross-check, the second server's command line.

No cluster and no Go binary: the pieces are pure, and the shared settings go
through our own CLI parser, so a flag `destination serve` does not take fails
here rather than at the start of a long run.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from bench import compare, linkerd_go
from bench.__main__ import compare_spec, parser
from bench.clients import HeldAddresses, StreamReport, Target
from bench.contenders import PLACEHOLDERS, CompareSpec, command_argv
from bench.report import table
from bench.run import stream_samples
from bench.scenarios import SHAPE_NAMES, build, expand
from bench.server import SharedFlags, our_flags
from bench.slices import SliceTracker
from bench.snapshot import apply_update
from destination._proto import destination_pb2 as pb
from destination._proto import net_pb2
from destination.cli.command import parse_serve_args
from destination.config import parse_opaque_ports

# -- ratios ------------------------------------------------------------------------------


def steps_result(cpu: float, rss: float, p50: float, beyond_p50: float) -> dict[str, Any]:
    return {
        "server_rss_after_sync_mb": rss,
        "server_peak_rss_mb": rss * 2,
        "connect": {"usage": {"server_cpu_s": cpu / 2}, "server_rss_mb": rss + 10},
        "churn": {
            "usage": {"server_cpu_s": cpu, "server_peak_rss_mb": rss * 2},
            "server_cpu_ms_per_slice_event": cpu / 10,
        },
        "all_steps": {
            "end_to_end_s": {"p50": p50, "p95": p50 * 2, "p99": p50 * 3},
            "ours_s": {"p50": beyond_p50, "p95": 0.2, "p99": 0.3},
        },
    }


def test_ratios_are_ours_over_theirs_for_every_measure_both_have() -> None:
    ours = steps_result(cpu=8.0, rss=120.0, p50=2.0, beyond_p50=0.1)
    theirs = steps_result(cpu=10.0, rss=60.0, p50=1.0, beyond_p50=0.025)
    got = compare.ratios(ours, theirs, ("py", "go"))
    assert got["churn_cpu_s"]["ratio"] == pytest.approx(0.8)
    assert got["churn_cpu_ms_per_event"]["ratio"] == pytest.approx(0.8)
    assert got["connect_cpu_s"] == {
        "label": "opening the streams: server CPU",
        "unit": "cpu_s",
        "py": 4.0,
        "go": 5.0,
        "ratio": pytest.approx(0.8),
    }
    assert got["rss_idle_mb"]["ratio"] == pytest.approx(2.0)
    assert got["rss_streams_mb"]["ratio"] == pytest.approx(130 / 70)
    assert got["rss_peak_mb"]["ratio"] == pytest.approx(2.0)
    assert got["end_to_end_p99"]["ratio"] == pytest.approx(2.0)
    assert got["beyond_watch_p50"]["ratio"] == pytest.approx(4.0)
    # Neither result has profile numbers: those measures are left out, not shown as "-".
    assert not any(key.startswith("profile_") for key in got)


def test_a_ratio_to_a_missing_zero_or_negative_value_is_none() -> None:
    ours = steps_result(cpu=8.0, rss=120.0, p50=2.0, beyond_p50=0.1)
    theirs = steps_result(cpu=0.0, rss=60.0, p50=1.0, beyond_p50=-0.004)
    del theirs["server_peak_rss_mb"]
    got = compare.ratios(ours, theirs, ("py", "go"))
    assert got["churn_cpu_s"]["ratio"] is None  # theirs used no CPU measurable in ticks
    assert got["beyond_watch_p50"]["ratio"] is None  # the watches' noise, not a share
    assert got["rss_peak_mb"] == {
        "label": "peak RSS (whole run)",
        "unit": "MB",
        "py": 240.0,
        "go": None,
        "ratio": None,
    }
    assert compare.ratio(None, 1.0) is None
    assert compare.ratio(3.0, 1.5) == pytest.approx(2.0)


def test_booleans_and_strings_are_not_read_as_numbers() -> None:
    assert compare.read({"a": {"b": True}}, ("a", "b")) is None
    assert compare.read({"a": {"b": "12"}}, ("a", "b")) is None
    assert compare.read({"a": {"b": 12}}, ("a", "b")) == 12.0
    assert compare.read({"a": 1}, ("a", "b")) is None


def test_add_ratios_fills_the_compared_section_only() -> None:
    alone: dict[str, Any] = steps_result(cpu=1.0, rss=1.0, p50=1.0, beyond_p50=1.0)
    compare.add_ratios(alone, "py")
    assert "compared" not in alone
    result = steps_result(cpu=3.0, rss=90.0, p50=1.0, beyond_p50=0.05)
    result["compared"] = {
        "name": "go",
        "result": steps_result(cpu=2.0, rss=45.0, p50=1.0, beyond_p50=0.05),
    }
    compare.add_ratios(result, "py")
    ratios = result["compared"]["ratios"]
    assert ratios["churn_cpu_s"]["py"] == 3.0 and ratios["churn_cpu_s"]["go"] == 2.0
    assert ratios["churn_cpu_s"]["ratio"] == pytest.approx(1.5)


def test_profile_results_give_profile_ratios() -> None:
    def profile(cpu_ms: float, p99: float) -> dict[str, Any]:
        return {
            "profile_changes": {"server_cpu_ms_per_change": cpu_ms},
            "write_to_stream_s": {"p50": p99 / 2, "p95": p99, "p99": p99},
        }

    got = compare.ratios(profile(4.0, 0.2), profile(2.0, 0.1), ("py", "go"))
    assert got["profile_cpu_ms_per_change"]["ratio"] == pytest.approx(2.0)
    assert got["profile_write_to_stream_p99"]["ratio"] == pytest.approx(2.0)
    assert "churn_cpu_s" not in got


# -- the cross-check ---------------------------------------------------------------------


def held(stream_id: int, service: str, ips: list[str], connected: bool = True) -> HeldAddresses:
    return HeldAddresses(stream_id, service, connected, tuple(sorted((ip, 8080) for ip in ips)))


TRUTH = {"svc-000": frozenset({"10.11.0.1", "10.11.0.2"}), "svc-001": frozenset({"10.11.0.3"})}


def test_two_servers_holding_the_api_state_agree() -> None:
    streams = [
        held(0, "svc-000", ["10.11.0.1", "10.11.0.2"]),
        held(1, "svc-001", ["10.11.0.3"]),
        held(2, "svc-000", ["10.11.0.2", "10.11.0.1"]),
    ]
    cross = compare.cross_check({"py": streams, "go": list(streams)}, TRUTH)
    assert cross["agree"] is True
    assert cross["targets"] == 2
    assert cross["targets_differing_between_servers"] == 0
    assert cross["servers"]["go"] == {
        "streams": 3,
        "not_connected": 0,
        "streams_differing_from_api": 0,
        "lost": 0,
        "phantom": 0,
        "phantom_of_other_targets": 0,
        "ports": [8080],
    }
    assert "all agree" in compare.cross_summary(cross)


def test_lost_and_phantom_addresses_and_differences_between_servers_are_reported() -> None:
    ours = [held(0, "svc-000", ["10.11.0.1", "10.11.0.2"]), held(1, "svc-001", ["10.11.0.3"])]
    theirs = [
        held(0, "svc-000", ["10.11.0.1", "10.11.0.9"]),  # one lost, one phantom
        held(1, "svc-001", ["10.11.0.3"]),
    ]
    cross = compare.cross_check({"py": ours, "go": theirs}, TRUTH)
    assert cross["agree"] is False
    assert cross["servers"]["py"]["streams_differing_from_api"] == 0
    go = cross["servers"]["go"]
    assert (go["streams_differing_from_api"], go["lost"], go["phantom"]) == (1, 1, 1)
    assert go["phantom_of_other_targets"] == 0  # 10.11.0.9 is nobody's
    assert cross["targets_differing_between_servers"] == 1
    [example] = cross["examples"]
    assert example["target"] == "svc-000"
    assert example["only_in_py"] == [("10.11.0.2", 8080)]
    assert example["only_in_go"] == [("10.11.0.9", 8080)]
    assert "DIFFERENCES" in compare.cross_summary(cross)


def test_a_straggler_stream_differs_even_when_the_most_common_sets_agree() -> None:
    right = ["10.11.0.1", "10.11.0.2"]
    ours = [held(i, "svc-000", right) for i in range(3)]
    theirs = [held(i, "svc-000", right) for i in range(2)] + [held(2, "svc-000", ["10.11.0.1"])]
    cross = compare.cross_check({"py": ours, "go": theirs}, {"svc-000": TRUTH["svc-000"]})
    assert cross["targets_differing_between_servers"] == 1
    assert cross["examples"][0]["distinct_sets"] == {"py": 1, "go": 2}
    assert cross["servers"]["go"]["lost"] == 1


def test_a_phantom_address_another_target_holds_is_told_apart() -> None:
    theirs = [held(0, "svc-001", ["10.11.0.3", "10.11.0.1"])]  # svc-000's address
    cross = compare.cross_check({"py": [], "go": theirs}, TRUTH)
    assert cross["servers"]["go"]["phantom"] == 1
    assert cross["servers"]["go"]["phantom_of_other_targets"] == 1


def test_fresh_streams_are_checked_against_the_api() -> None:
    fresh = {
        "py": {
            "svc-000": frozenset({("10.11.0.1", 8080), ("10.11.0.2", 8080)}),
            "svc-001": frozenset({("10.11.0.3", 8080)}),
        },
        "go": {"svc-000": frozenset({("10.11.0.1", 8080), ("10.11.0.7", 8080)})},
    }
    got = compare.fresh_check(fresh, TRUTH)
    assert got["py"] == {
        "targets": 2,
        "targets_differing_from_api": 0,
        "lost": 0,
        "phantom": 0,
        "examples": [],
    }
    # svc-001 is missing altogether: its address is lost too.
    assert got["go"]["targets_differing_from_api"] == 2
    assert (got["go"]["lost"], got["go"]["phantom"]) == (2, 1)
    assert got["go"]["examples"] == ["svc-000", "svc-001"]
    cross = compare.cross_check({"py": [], "go": []}, TRUTH)
    cross["fresh_streams"] = got
    assert "fresh streams off the API: py 0/2, go 2/2" in compare.cross_summary(cross)


def test_an_update_sequence_is_applied_as_a_proxy_keeps_its_set() -> None:
    def tcp(ip: str) -> net_pb2.TcpAddress:
        return net_pb2.TcpAddress(
            ip=net_pb2.IPAddress(ipv4=int(ipaddress.IPv4Address(ip))), port=8080
        )

    state: set[tuple[str, int]] = set()
    apply_update(
        state,
        pb.Update(
            add=pb.WeightedAddrSet(
                addrs=[
                    pb.WeightedAddr(addr=tcp("10.11.0.1")),
                    pb.WeightedAddr(addr=tcp("10.11.0.2")),
                ]
            )
        ),
    )
    apply_update(state, pb.Update(remove=pb.AddrSet(addrs=[tcp("10.11.0.1"), tcp("10.11.0.9")])))
    assert state == {("10.11.0.2", 8080)}
    apply_update(state, pb.Update(no_endpoints=pb.NoEndpoints(exists=True)))
    assert state == set()


def test_an_unconnected_stream_spoils_agreement() -> None:
    streams = [held(0, "svc-001", ["10.11.0.3"], connected=False)]
    cross = compare.cross_check({"py": streams, "go": list(streams)}, {"svc-001": TRUTH["svc-001"]})
    assert cross["servers"]["py"]["not_connected"] == 1
    assert cross["agree"] is False


def test_examples_are_bounded() -> None:
    truth = {f"svc-{i:03d}": frozenset({f"10.11.1.{i}"}) for i in range(20)}
    ours = [held(i, f"svc-{i:03d}", [f"10.11.1.{i}"]) for i in range(20)]
    theirs = [held(i, f"svc-{i:03d}", []) for i in range(20)]
    cross = compare.cross_check({"py": ours, "go": theirs}, truth)
    assert cross["targets_differing_between_servers"] == 20
    assert len(cross["examples"]) == compare.EXAMPLES


# -- per-stream samples of a step -----------------------------------------------------------


def report(stream_id: int, service: str, count: int, t_set: float | None) -> StreamReport:
    return StreamReport(stream_id, service, True, count, 0.0, t_set, t_set, 1, (), 0, None)


def test_stream_samples_time_the_streams_at_target_and_count_the_others() -> None:
    reports = [
        report(0, "a", 10, 105.0),
        report(1, "a", 9, 104.0),  # not at the target
        report(2, "b", 10, 103.0),  # b's watch never saw its final state
        report(3, "a", 10, 99.0),  # set before the PATCH: end-to-end clamps to 0
    ]
    targets = {"a": Target(10), "b": Target(10)}
    got = stream_samples(reports, targets, {"a": 100.0, "b": 100.0}, {"a": 102.0, "b": None})
    assert got.end_to_end == [5.0, 3.0, 0.0]
    assert got.ours == [3.0, -3.0]
    assert got.missing == 1
    assert dict(got.wrong) == {"count=9": 1}


# -- the second server's command line and cluster -------------------------------------------


def test_the_shared_settings_are_flags_our_server_takes_and_its_defaults() -> None:
    config = parse_serve_args(our_flags(SharedFlags()), environ={})
    defaults = parse_serve_args([], environ={})
    shared = SharedFlags()
    assert config.controller_namespace == shared.controller_namespace
    assert config.cluster_domain == shared.cluster_domain
    assert config.identity_trust_domain == shared.identity_trust_domain
    assert config.default_opaque_ports == parse_opaque_ports(shared.default_opaque_ports)
    for name in (
        "controller_namespace",
        "cluster_domain",
        "identity_trust_domain",
        "default_opaque_ports",
        "enable_h2_upgrade",
        "enable_ipv6",
        "outbound_transport_mode",
    ):
        assert getattr(config, name) == getattr(defaults, name), name


def test_the_go_server_gets_the_same_settings_and_its_hostname() -> None:
    shared = SharedFlags(cluster_domain="east.local", enable_ipv6=False)
    argv = linkerd_go.destination_argv(
        Path("/x/linkerd2-controller"),
        grpc_address="127.0.0.1:1",
        admin_address="127.0.0.1:2",
        kubeconfig=Path("/k/admin.kubeconfig"),
        shared=shared,
    )
    assert argv[:2] == ["/x/linkerd2-controller", "destination"]
    for flag in (
        "-addr=127.0.0.1:1",
        "-metrics-addr=127.0.0.1:2",
        "-kubeconfig=/k/admin.kubeconfig",
        "-controller-namespace=linkerd",
        "-cluster-domain=east.local",
        "-identity-trust-domain=cluster.local",
        f"-default-opaque-ports={shared.default_opaque_ports}",
        "-enable-ipv6=false",
        "-enable-h2-upgrade=true",
        "-outbound-transport-mode=transport-header",
        "-enable-endpoint-slices=true",
    ):
        assert flag in argv
    env = linkerd_go.destination_env({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "HOSTNAME": linkerd_go.HOSTNAME}


def test_a_missing_go_binary_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"build-linkerd-destination\.sh"):
        linkerd_go.check_binary(tmp_path / "linkerd2-controller")
    assert linkerd_go.default_binary().name == linkerd_go.BINARY_NAME


def test_the_external_workload_crd_also_serves_v1alpha1_and_keeps_ours_intact() -> None:
    ours = yaml.safe_load(linkerd_go.EXTERNAL_WORKLOAD_CRD.read_text())
    crd = linkerd_go.external_workload_crd()
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert set(versions) == {"v1beta1", "v1alpha1"}
    assert versions["v1beta1"] == ours["spec"]["versions"][0]
    assert versions["v1alpha1"]["served"] is True
    assert versions["v1alpha1"]["storage"] is False
    assert versions["v1alpha1"]["schema"]["openAPIV3Schema"]["type"] == "object"
    assert crd["metadata"] == ours["metadata"]
    # Applying it twice gives the same CRD (the version replaces itself).
    again = linkerd_go.crd_with_extra_version(crd, versions["v1alpha1"])
    assert again == crd


def test_an_extra_storage_version_is_refused() -> None:
    crd = linkerd_go.external_workload_crd()
    with pytest.raises(ValueError, match="storage"):
        linkerd_go.crd_with_extra_version(crd, {"name": "v2", "served": True, "storage": True})


def test_a_command_template_is_split_then_filled() -> None:
    values = dict.fromkeys(PLACEHOLDERS, "v")
    values["grpc_address"] = "127.0.0.1:5"
    values["kubeconfig"] = "/path with space/k"
    argv = command_argv("./srv --listen {grpc_address} '--kubeconfig={kubeconfig}'", values)
    assert argv == ["./srv", "--listen", "127.0.0.1:5", "--kubeconfig=/path with space/k"]


def test_a_bad_command_template_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        CompareSpec("command", command="srv {grpc_port}")
    with pytest.raises(ValueError, match="empty"):
        CompareSpec("command", command="   ")
    with pytest.raises(ValueError, match="--compare-command"):
        CompareSpec("linkerd", command="srv")
    with pytest.raises(ValueError, match="unknown server"):
        CompareSpec("envoy")
    assert CompareSpec("linkerd").name == "go"
    assert CompareSpec("ours").name == "py2"


# -- scenarios and the table ------------------------------------------------------------


def shape(name: str) -> tuple[int, int, int, int]:
    scenario = build(
        name,
        cycles=None,
        hold_s=0,
        rolling_restart=False,
        many_low=50,
        many_high=100,
        many_services=100,
    )
    high = max(s.replicas for s in scenario.steps)
    return scenario.services, scenario.streams_per_service, scenario.initial, high


def test_the_issue_shapes_are_scenarios_by_name_and_as_a_group() -> None:
    assert expand("shapes") == SHAPE_NAMES
    assert expand("few-large-services") == ("few-large-services",)
    assert "few-large-services" not in expand("all")
    assert shape("few-large-services") == (10, 100, 50, 100)
    assert shape("many-small-services") == (100, 20, 20, 40)
    assert shape("many-services") == (100, 100, 50, 100)  # 10,000 streams on 100 services
    with pytest.raises(ValueError, match="unknown scenario"):
        expand("everything")


def test_the_table_shows_both_servers_ratios_and_the_cross_check() -> None:
    ours = steps_result(cpu=8.0, rss=120.0, p50=2.0, beyond_p50=0.1)
    ours.update(
        scenario="few-large-services",
        parameters={"streams": 1000, "notes": []},
        load={"loadavg_at_start": [0.5, 0.5, 0.5]},
    )
    theirs = steps_result(cpu=10.0, rss=60.0, p50=1.0, beyond_p50=0.025)
    theirs["connect"]["streams"] = 1000
    theirs["connect"]["at_initial_count"] = 1000
    theirs["stream_ends_total"] = 0
    theirs["all_steps"]["end_to_end_s"]["count"] = 7
    ours["churn"]["event_to_enqueue"] = {"p50": 0.01, "p95": 0.02, "p99": 0.03}
    ours["churn"]["event_to_enqueue"]["p99_above_last_bucket"] = False
    ours["all_steps"]["end_to_end_s"].update(count=10, max=7.0)
    ours["all_steps"]["kubernetes_s"] = {"count": 0}
    ours["all_steps"]["ours_s"]["count"] = 10
    streams = [held(0, "svc-000", ["10.11.0.1", "10.11.0.2"])]
    ours["compared"] = {
        "name": "go",
        "description": "Linkerd's Go destination controller (/bin/x)",
        "result": theirs,
        "cross_check": compare.cross_check({"py": streams, "go": streams}, TRUTH),
    }
    compare.add_ratios(ours, "py")
    text = table({"scenarios": [ours]})
    assert "side by side with go" in text
    assert "go: streams connected" in text and "1000/1000" in text
    assert re.search(r"go: Get stream ends \(reopened by the clients\) +0\n", text)
    assert "churn: server CPU (py/go)" in text and "8.00 s / 10.00 s: ratio 0.80" in text
    assert "share beyond the API's own watch p50 (py/go)" in text
    assert "100 ms / 25 ms: ratio 4.00" in text
    assert "cross-check of the final states" in text
    timed = r"stream measurements at the target \(all steps\) \(py/go\) +10 / 7: ratio 1.43"
    assert re.search(timed, text)


def test_the_slice_watch_counts_addresses_that_come_back_under_another_pod() -> None:
    tracker = SliceTracker(cast(Any, None), "bench")

    def slice_event(kind: str, name: str, service: str, endpoints: list[tuple[str, str]]) -> None:
        body = {
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [
                {"addresses": [ip], "targetRef": {"name": pod}, "conditions": {"ready": True}}
                for ip, pod in endpoints
            ],
        }
        tracker._apply(kind, body, 1.0)

    slice_event("ADDED", "a-1", "a", [("10.11.0.1", "a-x-1"), ("10.11.0.2", "a-x-2")])
    slice_event("MODIFIED", "a-1", "a", [("10.11.0.1", "a-x-1"), ("10.11.0.2", "a-x-2")])
    assert (tracker.ip_reuses, tracker.ip_reuses_across_services) == (0, 0)
    slice_event("MODIFIED", "a-1", "a", [("10.11.0.1", "a-x-1"), ("10.11.0.2", "a-x-3")])
    assert (tracker.ip_reuses, tracker.ip_reuses_across_services) == (1, 0)
    slice_event("ADDED", "b-1", "b", [("10.11.0.1", "b-y-1")])
    assert (tracker.ip_reuses, tracker.ip_reuses_across_services) == (2, 1)
    assert tracker.pod_ip_changes == 0
    slice_event("MODIFIED", "b-1", "b", [("10.11.0.7", "b-y-1")])
    assert tracker.pod_ip_changes == 1


def test_the_flags_name_one_second_server() -> None:
    def spec(*argv: str) -> CompareSpec | None:
        return compare_spec(parser().parse_args(list(argv)))

    assert spec() is None
    assert spec("--compare-with", "linkerd") == CompareSpec("linkerd")
    assert spec("--compare-with", "linkerd", "--linkerd-controller", "/x") == CompareSpec(
        "linkerd", binary="/x"
    )
    assert spec("--compare-command", "srv {grpc_address}") == CompareSpec(
        "command", command="srv {grpc_address}"
    )
    assert spec("--compare-with", "ours", "--second-first") == CompareSpec("ours")
    with pytest.raises(ValueError, match="--second-first"):
        spec("--second-first")
    with pytest.raises(ValueError, match="--linkerd-controller"):
        spec("--compare-with", "ours", "--linkerd-controller", "/x")
    with pytest.raises(SystemExit):  # argparse: not both
        spec("--compare-with", "ours", "--compare-command", "srv")
