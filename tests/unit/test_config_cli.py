"""Unit tests for destination.config, destination.cli.command and destination.ops.logs.

Scope: how ``destination serve`` turns flags and ``DESTINATION_*`` variables
into a ServerConfig (defaults, precedence flag > environment > default, every
setting reachable both ways, booleans, opaque ports, HTTP/2 parameters), every
configuration error with its exact message and the flag or variable it blames,
``--help`` and ``--version``, the exit codes of ``main``, the lazy hand-off to
``destination.app.run``, and the log output of ``configure_logging``. The
environment is always injected; no test reads or depends on ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import sys
import types
from collections.abc import Iterator

import pytest
import structlog

from destination.cli import command as cli
from destination.cli.command import (
    build_config,
    build_parser,
    main,
    parse_serve_args,
    serve_settings,
)
from destination.config import (
    ConfigError,
    HostPort,
    LogFormat,
    OutboundTransportMode,
    ServerConfig,
    parse_host_port,
)
from destination.ops.logs import THIRD_PARTY_LOGGERS, configure_logging
from discovery.ports import PortSet

NO_ENV: dict[str, str] = {}

# --------------------------------------------------------------------------
# defaults


def test_no_flags_and_no_environment_give_the_documented_defaults() -> None:
    config = parse_serve_args([], environ=NO_ENV)

    assert config == ServerConfig()
    assert config.listen_address == "0.0.0.0:8086"
    assert config.admin_address == "127.0.0.1:9996"
    assert config.kubeconfig is None
    assert config.cluster_name == "local"
    assert config.controller_namespace == "linkerd"
    assert config.cluster_domain == "cluster.local"
    assert config.identity_trust_domain == "cluster.local"
    assert config.default_opaque_ports == PortSet.from_ports(
        [25, 587, 3306, 4444, 5432, 6379, 9300, 11211]
    )
    assert config.enable_h2_upgrade is True
    assert config.outbound_transport_mode is OutboundTransportMode.TRANSPORT_HEADER
    assert config.force_opaque_transport is True
    assert config.enable_ipv6 is True
    assert config.stream_queue_capacity == 100
    assert config.stream_stuck_deadline_s == 30.0
    assert config.meshed_http2_client_params is None
    assert config.ext_endpoint_zone_weights is False
    assert config.allow_insecure_remote_links is False
    assert config.log_level == "info"
    assert config.log_format is LogFormat.JSON
    assert config.shutdown_grace_s == 5.0


def test_identity_trust_domain_defaults_to_the_cluster_domain_given() -> None:
    config = parse_serve_args(["--cluster-domain", "east.example"], environ=NO_ENV)

    assert config.identity_trust_domain == "east.example"


def test_an_explicit_identity_trust_domain_is_kept() -> None:
    config = parse_serve_args(
        ["--cluster-domain", "east.example", "--identity-trust-domain", "root.example"],
        environ=NO_ENV,
    )

    assert (config.cluster_domain, config.identity_trust_domain) == (
        "east.example",
        "root.example",
    )


def test_server_config_is_frozen_keyword_only_and_hashable_with_http2_params() -> None:
    config = ServerConfig(meshed_http2_client_params={"keep_alive": {"while_idle": True}})

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cluster_name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ServerConfig("0.0.0.0:1")  # type: ignore[call-arg]
    assert hash(config) == hash(ServerConfig())


def test_addresses_are_available_split_into_host_and_port() -> None:
    config = ServerConfig(listen_address="[::]:0", admin_address="127.0.0.1:9996")

    assert config.listen == HostPort("::", 0)
    assert config.admin == HostPort("127.0.0.1", 9996)
    assert str(config.listen) == "[::]:0"


# --------------------------------------------------------------------------
# every setting, by flag and by environment variable

# A non-default string form of every setting, and the value it must produce.
NON_DEFAULTS: dict[str, tuple[str, object]] = {
    "listen_address": ("127.0.0.1:18086", "127.0.0.1:18086"),
    "admin_address": ("[::1]:19996", "[::1]:19996"),
    "kubeconfig": ("/etc/kube/config", "/etc/kube/config"),
    "cluster_name": ("east", "east"),
    "controller_namespace": ("mesh-system", "mesh-system"),
    "cluster_domain": ("east.local", "east.local"),
    "identity_trust_domain": ("root.example", "root.example"),
    "default_opaque_ports": ("3306,8000-8010", PortSet.from_ranges([(3306, 3306), (8000, 8010)])),
    "enable_h2_upgrade": ("false", False),
    "outbound_transport_mode": ("transparent", OutboundTransportMode.TRANSPARENT),
    "enable_ipv6": ("false", False),
    "stream_queue_capacity": ("7", 7),
    "max_streams_per_connection": ("3", 3),
    "stream_stuck_deadline_s": ("2.5", 2.5),
    "meshed_http2_client_params": (
        '{"keep_alive": {"interval": {"seconds": 10}}}',
        {"keep_alive": {"interval": {"seconds": 10}}},
    ),
    "ext_endpoint_zone_weights": ("true", True),
    "enable_remote_discovery": ("false", False),
    "remote_withdraw_after_s": ("90", 90.0),
    "allow_insecure_remote_links": ("true", True),
    "remote_max_objects_per_kind": ("500000", 500_000),
    "log_level": ("debug", "debug"),
    "log_format": ("console", LogFormat.CONSOLE),
    "shutdown_grace_s": ("0", 0.0),
    "gc_freeze": ("false", False),
    "gc_thaw_period_s": ("120", 120.0),
}

SETTINGS = {setting.name: setting for setting in serve_settings()}


def _flag_args(name: str, text: str) -> list[str]:
    setting = SETTINGS[name]
    if setting.is_bool:
        return [setting.flag if text == "true" else "--no-" + setting.flag.removeprefix("--")]
    return [setting.flag, text]


def test_every_config_field_has_exactly_one_flag_and_one_variable() -> None:
    names = [spec.name for spec in dataclasses.fields(ServerConfig)]

    assert list(SETTINGS) == names
    assert set(NON_DEFAULTS) == set(names)
    for name, setting in SETTINGS.items():
        assert setting.flag == "--" + name.replace("_", "-")
        assert setting.env == "DESTINATION_" + name.upper()


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in NON_DEFAULTS])
def test_each_setting_can_be_set_by_its_flag(name: str) -> None:
    text, expected = NON_DEFAULTS[name]

    config = parse_serve_args(_flag_args(name, text), environ=NO_ENV)

    assert getattr(config, name) == expected
    assert getattr(config, name) != getattr(ServerConfig(), name)


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in NON_DEFAULTS])
def test_each_setting_can_be_set_by_its_environment_variable(name: str) -> None:
    text, expected = NON_DEFAULTS[name]

    config = parse_serve_args([], environ={SETTINGS[name].env: text})

    assert getattr(config, name) == expected


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in NON_DEFAULTS])
def test_a_flag_wins_over_the_environment_variable(name: str) -> None:
    text, expected = NON_DEFAULTS[name]
    default_text = _string_form(getattr(ServerConfig(), name))

    config = parse_serve_args(_flag_args(name, text), environ={SETTINGS[name].env: default_text})

    assert getattr(config, name) == expected


def _string_form(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def test_unrelated_and_unknown_destination_variables_are_ignored() -> None:
    # Kubernetes service links for a Service named "destination" look like this.
    environ = {
        "DESTINATION_PORT": "tcp://10.0.0.1:8086",
        "DESTINATION_SERVICE_HOST": "10.0.0.1",
        "DESTINATION_LOGLEVEL": "debug",
        "LOG_LEVEL": "debug",
    }

    assert parse_serve_args([], environ=environ) == ServerConfig()


def test_build_config_takes_an_already_parsed_namespace() -> None:
    args = build_parser().parse_args(["serve", "--cluster-name", "west"])

    config = build_config(args, environ={"DESTINATION_CLUSTER_NAME": "east"})

    assert config.cluster_name == "west"


# --------------------------------------------------------------------------
# booleans


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        pytest.param([], {}, True, id="default-true"),
        pytest.param(["--no-enable-h2-upgrade"], {}, False, id="no-flag-disables"),
        pytest.param(
            ["--enable-h2-upgrade"],
            {"DESTINATION_ENABLE_H2_UPGRADE": "0"},
            True,
            id="flag-beats-env",
        ),
        pytest.param(
            ["--no-enable-h2-upgrade"],
            {"DESTINATION_ENABLE_H2_UPGRADE": "true"},
            False,
            id="no-flag-beats-env",
        ),
        pytest.param(
            ["--no-enable-h2-upgrade", "--enable-h2-upgrade"], {}, True, id="last-flag-wins"
        ),
    ],
)
def test_boolean_flags_come_in_pairs(
    argv: list[str], environ: dict[str, str], expected: bool
) -> None:
    assert parse_serve_args(argv, environ=environ).enable_h2_upgrade is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[pytest.param(word, True, id=f"true-{word}") for word in ("1", "true", "YES", " on ")],
        *[pytest.param(word, False, id=f"false-{word}") for word in ("0", "False", "no", "off")],
    ],
)
def test_boolean_variables_accept_common_spellings(text: str, expected: bool) -> None:
    config = parse_serve_args([], environ={"DESTINATION_ENABLE_IPV6": text})

    assert config.enable_ipv6 is expected


# --------------------------------------------------------------------------
# opaque ports and HTTP/2 parameters


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        pytest.param("", (), id="empty-means-no-opaque-ports"),
        pytest.param("3306", ((3306, 3306),), id="one-port"),
        pytest.param("5432, 4000-4100,", ((4000, 4100), (5432, 5432)), id="ranges-trim-comma"),
    ],
)
def test_default_opaque_ports_are_parsed_into_a_port_set(
    text: str, ranges: tuple[tuple[int, int], ...]
) -> None:
    config = parse_serve_args(["--default-opaque-ports", text], environ=NO_ENV)

    assert config.default_opaque_ports.ranges == ranges


def test_an_empty_http2_params_variable_means_none() -> None:
    config = parse_serve_args([], environ={"DESTINATION_MESHED_HTTP2_CLIENT_PARAMS": " "})

    assert config.meshed_http2_client_params is None


def test_the_helm_default_http2_params_are_kept_as_the_raw_dict() -> None:
    helm = {
        "keep_alive": {"interval": {"seconds": 10}, "timeout": {"seconds": 3}, "while_idle": True}
    }

    config = parse_serve_args(["--meshed-http2-client-params", json.dumps(helm)], environ=NO_ENV)

    assert config.meshed_http2_client_params == helm


def test_an_empty_kubeconfig_means_in_cluster_even_when_the_variable_is_set() -> None:
    config = parse_serve_args(
        ["--kubeconfig", ""], environ={"DESTINATION_KUBECONFIG": "/home/me/.kube/config"}
    )

    assert config.kubeconfig is None


def test_log_level_is_case_insensitive_and_warn_means_warning() -> None:
    config = parse_serve_args(["--log-level", "WARN"], environ=NO_ENV)

    assert config.log_level == "warning"


# --------------------------------------------------------------------------
# configuration errors

DNS_LABEL = (
    "must be a DNS label: 1-63 lowercase letters, digits and '-', starting and ending "
    "with a letter or digit; got "
)
DNS_NAME = (
    "must be a DNS name such as cluster.local: dot-separated DNS labels, lowercase, "
    "no trailing dot; got "
)

CONFIG_ERRORS = [
    pytest.param(
        ["--stream-queue-capacity", "0"], {},
        "--stream-queue-capacity: must be an integer greater than 0, got 0",
        id="queue-capacity-zero",
    ),
    pytest.param(
        [], {"DESTINATION_STREAM_QUEUE_CAPACITY": "-5"},
        "DESTINATION_STREAM_QUEUE_CAPACITY: must be an integer greater than 0, got -5",
        id="queue-capacity-negative-from-env",
    ),
    pytest.param(
        ["--stream-queue-capacity", "lots"], {},
        "--stream-queue-capacity: expected an integer, got 'lots'",
        id="queue-capacity-not-a-number",
    ),
    pytest.param(
        ["--stream-stuck-deadline-s", "0"], {},
        "--stream-stuck-deadline-s: must be a number of seconds greater than 0, got 0.0",
        id="stuck-deadline-zero",
    ),
    pytest.param(
        ["--stream-stuck-deadline-s", "nan"], {},
        "--stream-stuck-deadline-s: must be a number of seconds greater than 0, got nan",
        id="stuck-deadline-nan",
    ),
    pytest.param(
        ["--shutdown-grace-s", "-1"], {},
        "--shutdown-grace-s: must be a number of seconds 0 or more, got -1.0",
        id="shutdown-grace-negative",
    ),
    pytest.param(
        [], {"DESTINATION_SHUTDOWN_GRACE_S": "soon"},
        "DESTINATION_SHUTDOWN_GRACE_S: expected a number of seconds, got 'soon'",
        id="shutdown-grace-not-a-number",
    ),
    pytest.param(
        ["--default-opaque-ports", "80,x,70000,90-80"], {},
        "--default-opaque-ports: invalid port or range 'x', '70000', '90-80' in "
        "'80,x,70000,90-80' (expected a comma list of ports 0..65535 and lo-hi ranges)",
        id="opaque-ports-every-invalid-item-listed",
    ),
    pytest.param(
        ["--meshed-http2-client-params", "{keep_alive: 1}"], {},
        "--meshed-http2-client-params: not valid JSON: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)",
        id="http2-params-bad-json",
    ),
    pytest.param(
        [], {"DESTINATION_MESHED_HTTP2_CLIENT_PARAMS": "[1, 2]"},
        "DESTINATION_MESHED_HTTP2_CLIENT_PARAMS: must be a JSON object, got an array",
        id="http2-params-not-an-object",
    ),
    pytest.param(
        ["--outbound-transport-mode", "opaque"], {},
        "--outbound-transport-mode: must be one of transparent, transport-header; got 'opaque'",
        id="outbound-mode-unknown",
    ),
    pytest.param(
        ["--log-level", "trace"], {},
        "--log-level: must be one of debug, info, warning, error, critical; got 'trace'",
        id="log-level-unknown",
    ),
    pytest.param(
        [], {"DESTINATION_LOG_FORMAT": "plain"},
        "DESTINATION_LOG_FORMAT: must be one of json, console; got 'plain'",
        id="log-format-unknown",
    ),
    pytest.param(
        [], {"DESTINATION_ENABLE_IPV6": "maybe"},
        "DESTINATION_ENABLE_IPV6: expected true or false (also 1/0, yes/no, on/off), "
        "got 'maybe'",
        id="boolean-variable-unknown-word",
    ),
    pytest.param(
        ["--listen-address", ":8086"], {},
        "--listen-address: the host is missing or blank in ':8086'; use 0.0.0.0:PORT or "
        "[::]:PORT to listen on all interfaces",
        id="listen-address-without-host",
    ),
    pytest.param(
        ["--admin-address", "0.0.0.0"], {},
        "--admin-address: expected host:port, got '0.0.0.0'",
        id="admin-address-without-port",
    ),
    pytest.param(
        ["--admin-address", "::1:9996"], {},
        "--admin-address: an IPv6 host needs brackets, as in [::1]:8086; got '::1:9996'",
        id="admin-address-ipv6-without-brackets",
    ),
    pytest.param(
        ["--admin-address", "[::1]9996"], {},
        "--admin-address: expected [ipv6]:port, got '[::1]9996'",
        id="admin-address-bracket-without-colon",
    ),
    pytest.param(
        ["--listen-address", "0.0.0.0:65536"], {},
        "--listen-address: the port must be a number in 0..65535; got '0.0.0.0:65536'",
        id="listen-port-too-large",
    ),
    pytest.param(
        ["--kubeconfig", "  "], {},
        "--kubeconfig: must be a path; leave it unset for the in-cluster config",
        id="kubeconfig-blank",
    ),
    pytest.param(
        ["--cluster-name", "East"], {},
        f"--cluster-name: {DNS_LABEL}'East'",
        id="cluster-name-not-a-dns-label",
    ),
    pytest.param(
        [], {"DESTINATION_CONTROLLER_NAMESPACE": ""},
        f"DESTINATION_CONTROLLER_NAMESPACE: {DNS_LABEL}''",
        id="controller-namespace-empty",
    ),
    pytest.param(
        ["--cluster-domain", "cluster.local."], {},
        f"--cluster-domain: {DNS_NAME}'cluster.local.'",
        id="cluster-domain-trailing-dot",
    ),
    pytest.param(
        ["--identity-trust-domain", "root..example"], {},
        f"--identity-trust-domain: {DNS_NAME}'root..example'",
        id="trust-domain-empty-label",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "environ", "message"), CONFIG_ERRORS)
def test_invalid_settings_are_rejected_naming_the_flag_or_variable(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_serve_args(argv, environ=environ)

    assert str(caught.value) == message


def test_a_config_error_keeps_the_setting_problem_and_source_apart() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_serve_args([], environ={"DESTINATION_STREAM_QUEUE_CAPACITY": "0"})

    error = caught.value
    assert isinstance(error, ValueError)
    assert error.setting == "stream_queue_capacity"
    assert error.source == "DESTINATION_STREAM_QUEUE_CAPACITY"
    assert error.problem == "must be an integer greater than 0, got 0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"stream_queue_capacity": True},
            "stream_queue_capacity: must be an integer",
            id="bool-is-not-a-capacity",
        ),
        pytest.param(
            {"enable_ipv6": "yes"},
            "enable_ipv6: must be true or false, got 'yes'",
            id="string-is-not-a-bool",
        ),
        pytest.param(
            {"log_format": "xml"},
            "log_format: must be one of json, console; got 'xml'",
            id="unknown-log-format",
        ),
        pytest.param(
            {"meshed_http2_client_params": []},
            "meshed_http2_client_params: must be a JSON object, got an array",
            id="params-not-a-dict",
        ),
        pytest.param(
            {"default_opaque_ports": "25"},
            "default_opaque_ports: must be a PortSet",
            id="ports-not-parsed",
        ),
    ],
)
def test_server_config_checks_values_built_in_code_too(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("0.0.0.0:8086", HostPort("0.0.0.0", 8086), id="ipv4-any"),
        pytest.param("[::]:0", HostPort("::", 0), id="ipv6-any-port-zero"),
        pytest.param("localhost:09996", HostPort("localhost", 9996), id="name-leading-zero"),
    ],
)
def test_host_port_parsing(address: str, expected: HostPort) -> None:
    assert parse_host_port(address) == expected


# --------------------------------------------------------------------------
# main: help, version, exit codes, hand-off to the app


def test_serve_help_lists_every_flag_variable_and_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")

    assert main(["serve", "--help"]) == 0

    out = capsys.readouterr().out
    for setting in serve_settings():
        assert setting.flag in out
        assert setting.env in out
        if setting.is_bool:
            assert "--no-" + setting.flag.removeprefix("--") in out
    assert "Default: 25,587,3306,4444,5432,6379,9300,11211." in out
    assert "Default: in-cluster config." in out
    assert "Default: the cluster domain." in out
    assert "binary's own default is transparent" in out
    assert "A flag wins over its variable" in out


def test_top_level_help_lists_the_serve_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0

    assert "serve" in capsys.readouterr().out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0

    assert capsys.readouterr().out == f"destination {version('multicluster-destination')}\n"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-subcommand"),
        pytest.param(["launch"], id="unknown-subcommand"),
        pytest.param(["serve", "--no-such-flag"], id="unknown-flag"),
        pytest.param(["serve", "--cluster-name"], id="missing-value"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2

    assert "error:" in capsys.readouterr().err


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` reads os.environ: remove any DESTINATION_* setting the runner may have."""
    for setting in serve_settings():
        monkeypatch.delenv(setting.env, raising=False)


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[ServerConfig]:
    """Install a ``destination.app`` whose ``run`` records its config and returns 0."""
    received: list[ServerConfig] = []

    async def run(config: ServerConfig) -> int:
        received.append(config)
        return 0

    module = types.ModuleType("destination.app")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "destination.app", module)
    monkeypatch.setattr(cli, "configure_logging", lambda **kwargs: None)
    return received


@pytest.mark.usefixtures("clean_environ")
def test_serve_with_an_invalid_setting_exits_2_with_an_error_line(
    capsys: pytest.CaptureFixture[str], fake_app: list[ServerConfig]
) -> None:
    assert main(["serve", "--stream-queue-capacity", "0"]) == 2

    assert capsys.readouterr().err == (
        "error: --stream-queue-capacity: must be an integer greater than 0, got 0\n"
    )
    assert fake_app == []


@pytest.mark.usefixtures("clean_environ")
def test_serve_runs_the_app_with_the_config_and_returns_its_status(
    monkeypatch: pytest.MonkeyPatch, fake_app: list[ServerConfig]
) -> None:
    monkeypatch.setenv("DESTINATION_CLUSTER_NAME", "east")

    assert main(["serve", "--stream-queue-capacity", "5"]) == 0

    assert fake_app == [ServerConfig(cluster_name="east", stream_queue_capacity=5)]


@pytest.mark.usefixtures("clean_environ")
def test_serve_configures_logging_from_the_config_before_running(
    monkeypatch: pytest.MonkeyPatch, fake_app: list[ServerConfig]
) -> None:
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(cli, "configure_logging", lambda **kwargs: calls.append(kwargs))

    main(["serve", "--log-level", "debug", "--log-format", "console"])

    assert calls == [{"level": "debug", "fmt": LogFormat.CONSOLE}]


@pytest.mark.usefixtures("clean_environ")
def test_serve_returns_the_apps_nonzero_status(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run(config: ServerConfig) -> int:
        return 1

    module = types.ModuleType("destination.app")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "destination.app", module)
    monkeypatch.setattr(cli, "configure_logging", lambda **kwargs: None)

    assert main(["serve"]) == 1


@pytest.mark.usefixtures("clean_environ")
def test_serve_exits_1_when_the_app_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run(config: ServerConfig) -> int:
        raise RuntimeError("cannot reach the API server")

    module = types.ModuleType("destination.app")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "destination.app", module)
    monkeypatch.setattr(cli, "configure_logging", lambda **kwargs: None)

    assert main(["serve"]) == 1


# --------------------------------------------------------------------------
# logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    library_levels = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    for name, library_level in library_levels.items():
        logging.getLogger(name).setLevel(library_level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_carry_event_fields_level_logger_and_utc_timestamp() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)

    log = structlog.get_logger("destination.test_logs")
    log.debug("not_written")
    log.info("watch_relisted", cluster="east", objects=3)

    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "watch_relisted"
    assert (record["cluster"], record["objects"]) == ("east", 3)
    assert (record["level"], record["logger"]) == ("info", "destination.test_logs")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", record["timestamp"])


@pytest.mark.usefixtures("restore_logging")
def test_library_logs_are_structured_and_capped_at_warning() -> None:
    out = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=out)

    library = logging.getLogger("aiohttp.test_logs")
    library.info("chatty internals")
    library.warning("connection reset by %s", "peer")

    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "connection reset by peer"
    assert (record["level"], record["logger"]) == ("warning", "aiohttp.test_logs")


@pytest.mark.usefixtures("restore_logging")
def test_json_exceptions_are_one_line_without_local_variables() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    secret = "token-123"

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("destination.test_logs").exception("task_failed", secret_len=1)

    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["exception"][0]["exc_type"] == "RuntimeError"
    assert secret not in line


@pytest.mark.usefixtures("restore_logging")
def test_console_exceptions_show_no_local_variables() -> None:
    """Hardening #16: rich's console tracebacks printed frame locals (headers, tokens)."""
    out = io.StringIO()
    configure_logging(level="info", fmt="console", stream=out)

    def request_remote(authorization: str) -> None:
        raise RuntimeError("remote refused")

    secret = "-".join(("secret", "token", "123"))  # not in the source lines shown
    try:
        request_remote(f"Bearer {secret}")
    except RuntimeError:
        structlog.get_logger("destination.test_logs").exception("remote_failed")

    text = out.getvalue()
    assert "remote_failed" in text and "RuntimeError" in text and "request_remote" in text
    assert secret not in text


@pytest.mark.usefixtures("restore_logging")
def test_console_format_writes_readable_lines() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="console", stream=out)

    structlog.get_logger("destination.test_logs").info("serve_starting", cluster="east")

    line = out.getvalue()
    assert "serve_starting" in line
    assert "cluster=east" in line
    assert "\x1b[" not in line  # no colours when the stream is not a terminal


@pytest.mark.parametrize(
    ("level", "fmt", "message"),
    [
        pytest.param("loud", "json", "log_level: must be one of", id="unknown-level"),
        pytest.param("info", "plain", "log_format: must be one of json, console", id="bad-format"),
    ],
)
def test_configure_logging_rejects_unknown_levels_and_formats(
    level: str, fmt: str, message: str
) -> None:
    root_handlers = list(logging.getLogger().handlers)

    with pytest.raises(ConfigError, match=re.escape(message)):
        configure_logging(level=level, fmt=fmt)

    assert logging.getLogger().handlers == root_handlers


def test_the_deployment_binds_the_admin_server_where_probes_and_prometheus_reach_it() -> None:
    """The default admin address is loopback; the Deployment must override it."""
    import pathlib

    import yaml

    path = pathlib.Path(__file__).parents[2] / "deploy" / "destination.yaml"
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (deployment,) = [d for d in documents if d.get("kind") == "Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    config = ServerConfig(admin_address=env["DESTINATION_ADMIN_ADDRESS"])
    assert config.admin.host == "0.0.0.0"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["admin"] == config.admin.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "admin"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(config.admin.port)
