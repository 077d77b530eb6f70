"""Configuration: each bad setting gives one line naming it; values derive correctly;
the README documents exactly the settings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from producer.app.settings import RETIRED, Settings, load_settings
from producer.core.errors import ConfigError
from tests.support import ROOT

GOOD = {
    "PHONET_DOMAIN": "acme.phonet.com.ua",
    "PHONET_API_KEY": "S3Bvc2eNimuQmQWyJt5aEvNjbND1fz0X",
    "PHONET_SUBSCRIBERS": "001,002,ivan.petrov@example.com",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*Settings.field_names(), *RETIRED]:
        monkeypatch.delenv(name.upper(), raising=False)


def load(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_good_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, GOOD)
    assert s.subscribers == ("001", "002", "ivan.petrov@example.com")
    assert s.api_key == GOOD["PHONET_API_KEY"]
    assert s.socket_base_url == "wss://acme.phonet.com.ua/live/connector/v3/easy"
    assert s.phonet_exchange == "phonet.events"
    assert s.phonet_click2call_queue == "phonet.click2call"
    assert s.metrics_port == 9120
    assert s.metrics_host == "0.0.0.0"
    assert s.log_level == "INFO"
    assert s.log_format == "json"
    assert s.safe_amqp_url == "amqp://guest:***@localhost:5672/"
    assert GOOD["PHONET_API_KEY"] not in repr(s)


def test_socket_url_has_the_documented_query(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, GOOD)
    assert s.socket_url("ivan.petrov@example.com") == (
        "wss://acme.phonet.com.ua/live/connector/v3/easy?domain=acme.phonet.com.ua"
        "&apiKey=S3Bvc2eNimuQmQWyJt5aEvNjbND1fz0X&subscriber=ivan.petrov%40example.com"
    )


def test_api_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-a-secret\n")
    env = {k: v for k, v in GOOD.items() if k != "PHONET_API_KEY"}
    s = load(monkeypatch, {**env, "PHONET_API_KEY_FILE": str(key_file)})
    assert s.api_key == "from-a-secret"


@pytest.mark.parametrize(
    ("env", "line"),
    [
        pytest.param({"PHONET_DOMAIN": None}, "PHONET_DOMAIN: required (not set)", id="no-domain"),
        pytest.param(
            {"PHONET_DOMAIN": "https://acme.phonet.com.ua"},
            "PHONET_DOMAIN: must be a host name",
            id="domain-with-scheme",
        ),
        pytest.param(
            {"PHONET_DOMAIN": "acme/x"}, "PHONET_DOMAIN: must be a host name", id="domain-with-path"
        ),
        pytest.param(
            {"PHONET_API_KEY": None},
            "PHONET_API_KEY: required (or PHONET_API_KEY_FILE)",
            id="no-key",
        ),
        pytest.param({"PHONET_API_KEY": "  "}, "PHONET_API_KEY: is empty", id="blank-key"),
        pytest.param(
            {"PHONET_API_KEY_FILE": "/nonexistent/key"},
            "PHONET_API_KEY: set PHONET_API_KEY or PHONET_API_KEY_FILE, not both",
            id="both-keys",
        ),
        pytest.param(
            {"PHONET_API_KEY": None, "PHONET_API_KEY_FILE": "/nonexistent/key"},
            "PHONET_API_KEY_FILE: cannot read /nonexistent/key: No such file",
            id="key-file-missing",
        ),
        pytest.param(
            {"PHONET_SUBSCRIBERS": None},
            "PHONET_SUBSCRIBERS: required (a list, `auto`, or PHONET_SUBSCRIBERS_FILE)",
            id="no-subscribers",
        ),
        pytest.param(
            {"PHONET_SUBSCRIBERS_FILE": __file__},
            "PHONET_SUBSCRIBERS: set PHONET_SUBSCRIBERS or PHONET_SUBSCRIBERS_FILE, not both",
            id="list-and-file",
        ),
        pytest.param(
            {"PHONET_SUBSCRIBERS": None, "PHONET_SUBSCRIBERS_FILE": "/nonexistent/subs"},
            "PHONET_SUBSCRIBERS_FILE: cannot read /nonexistent/subs: No such file",
            id="file-missing",
        ),
        pytest.param(
            {"PHONET_REST_URL": "ftp://x"},
            "PHONET_REST_URL: must be an http:// or https:// URL",
            id="rest-url",
        ),
        pytest.param(
            {"PHONET_REST_URL": "http://phonet.example.com"},
            "PHONET_REST_URL: must be https:// (http:// only for localhost)",
            id="rest-url-plain-http",
        ),
        pytest.param(
            {"AMQP_URL": "amqp://a/,http://b/"},
            "AMQP_URL: must be an amqp:// or amqps:// URL with a host (URL 2 of 2)",
            id="second-amqp-url",
        ),
        pytest.param(
            {"PHONET_DISCOVERY_FIELD": "name"},
            "PHONET_DISCOVERY_FIELD: Input should be 'ext' or 'email'",
            id="discovery-field",
        ),
        pytest.param(
            {"PHONET_DISCOVERY_INTERVAL": "0"},
            "PHONET_DISCOVERY_INTERVAL: Input should be greater than 0",
            id="discovery-interval",
        ),
        pytest.param(
            {"PHONET_SUBSCRIBERS": ""},
            "PHONET_SUBSCRIBERS: lists no subscriber",
            id="empty-subscribers",
        ),
        pytest.param(
            {"PHONET_SUBSCRIBERS": "001,,002"},
            "PHONET_SUBSCRIBERS: item 2 is empty",
            id="empty-item",
        ),
        pytest.param(
            {"PHONET_SUBSCRIBERS": "001,001"},
            "PHONET_SUBSCRIBERS: '001' is listed twice",
            id="duplicate",
        ),
        pytest.param({"PHONET_SUBSCRIBERS": "a" * 250}, "PHONET_SUBSCRIBERS: 'aaaa", id="too-long"),
        pytest.param(
            {"PHONET_URL": "http://x/live"},
            "PHONET_URL: must be a ws:// or wss://",
            id="url-scheme",
        ),
        pytest.param(
            {"PHONET_URL": "wss://x/live?apiKey=1"},
            "PHONET_URL: must not carry apiKey",
            id="url-with-key",
        ),
        pytest.param(
            {"AMQP_URL": "http://guest:hunter2@x/"},
            "AMQP_URL: must be an amqp://",
            id="amqp-scheme",
        ),
        pytest.param(
            {"PHONET_EXCHANGE": "amq.topic"},
            "PHONET_EXCHANGE: must not start with",
            id="reserved-exchange",
        ),
        pytest.param(
            {"PHONET_EXCHANGE": ""}, "PHONET_EXCHANGE: must be 1..255 bytes", id="empty-exchange"
        ),
        pytest.param(
            {"METRICS_PORT": "http"},
            "METRICS_PORT: Input should be a valid integer",
            id="port-not-int",
        ),
        pytest.param(
            {"METRICS_PORT": "70000"}, "METRICS_PORT: Input should be less than", id="port-range"
        ),
        pytest.param({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: Input should be 'DEBUG'", id="level"),
        pytest.param(
            {"LOG_FORMAT": "xml"}, "LOG_FORMAT: Input should be 'json' or 'text'", id="format"
        ),
        pytest.param(
            {"PHONET_BUFFER_SIZE": "0"}, "PHONET_BUFFER_SIZE: Input should be greater", id="buffer"
        ),
        pytest.param(
            {"PHONET_RECONNECT_MIN_DELAY": "99"},
            "PHONET_RECONNECT_MIN_DELAY: must not exceed",
            id="min-over-max",
        ),
        pytest.param(
            {"PHONET_CLICK2CALL_ALLOWED_NUMBERS": r"\+?(380"},
            "PHONET_CLICK2CALL_ALLOWED_NUMBERS: not a valid regular expression (missing ),",
            id="numbers-pattern",
        ),
        pytest.param(
            {"PHONET_CLICK2CALL_RATE_LIMIT": "-1"},
            "PHONET_CLICK2CALL_RATE_LIMIT: Input should be greater than or equal to 0",
            id="rate-limit",
        ),
        pytest.param(
            {"AMQP_URL": "amqps://x/", "AMQP_CA_FILE": "/nonexistent/ca.pem"},
            "AMQP_CA_FILE: cannot read /nonexistent/ca.pem",
            id="ca-missing",
        ),
        pytest.param(
            {"AMQP_CA_FILE": __file__},
            "AMQP_CA_FILE: needs an amqps:// AMQP_URL",
            id="tls-without-amqps",
        ),
        pytest.param(
            {"AMQP_URL": "amqps://x/", "AMQP_CA_FILE": __file__},
            "AMQP_CA_FILE: not a PEM CA bundle OpenSSL can load",
            id="ca-not-pem",
        ),
        pytest.param(
            {"AMQP_URL": "amqps://x/", "AMQP_CERT_FILE": __file__},
            "AMQP_CERT_FILE: the certificate and its key do not load together",
            id="cert-not-pem",
        ),
        pytest.param(
            {"PHONET_CLICK2CALL_RATE_LIMIT": "inf"},
            "PHONET_CLICK2CALL_RATE_LIMIT: Input should be a finite number",
            id="rate-limit-inf",
        ),
        pytest.param(
            {"AMQP_CA_FILE": "", "METRICS_PORT": "x"},
            "METRICS_PORT: Input should be a valid integer",
            id="empty-path-is-unset",
        ),
        pytest.param(
            {"AMQP_URL": "amqps://x/", "AMQP_KEY_FILE": __file__},
            "AMQP_KEY_FILE: needs AMQP_CERT_FILE",
            id="key-without-cert",
        ),
        pytest.param(
            {"PHONET_API_KEY_CHECK_INTERVAL": "0"},
            "PHONET_API_KEY_CHECK_INTERVAL: Input should be greater than 0",
            id="key-interval",
        ),
        pytest.param(
            {"PHONET_SHUTDOWN_TIMEOUT": "-1"},
            "PHONET_SHUTDOWN_TIMEOUT: Input should be greater than 0",
            id="timeout",
        ),
    ],
)
def test_bad_setting_gives_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None], line: str
) -> None:
    merged = {**GOOD, **env}
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, {k: v for k, v in merged.items() if v is not None})
    lines = str(info.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(line), lines[0]


def test_subscribers_auto_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    auto = load(monkeypatch, {**GOOD, "PHONET_SUBSCRIBERS": " AUTO "})
    assert auto.discovery
    assert auto.subscribers == ()
    assert auto.roster.rest_base_url(auto.phonet_domain) == f"https://{GOOD['PHONET_DOMAIN']}"
    listed = tmp_path / "subscribers"
    listed.write_text("001\n# later: 003\n002\n")
    env = {k: v for k, v in GOOD.items() if k != "PHONET_SUBSCRIBERS"}
    monkeypatch.delenv("PHONET_SUBSCRIBERS")
    from_file = load(monkeypatch, {**env, "PHONET_SUBSCRIBERS_FILE": str(listed)})
    assert not from_file.discovery
    assert from_file.subscribers == ("001", "002")


def test_click2call_guards_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load(monkeypatch, GOOD)
    assert defaults.phonet_click2call_allowed_users == ()
    assert defaults.phonet_click2call_allowed_numbers == ""
    assert defaults.amqp_tls() is None
    s = load(
        monkeypatch,
        {
            **GOOD,
            "PHONET_CLICK2CALL_ALLOWED_USERS": " crm , helpdesk,,",
            "PHONET_CLICK2CALL_ALLOWED_NUMBERS": r" \+?380\d{9} ",
            "PHONET_CLICK2CALL_RATE_LIMIT": "0",
        },
    )
    assert s.phonet_click2call_allowed_users == ("crm", "helpdesk")
    assert s.phonet_click2call_allowed_numbers == r"\+?380\d{9}"
    assert s.phonet_click2call_rate_limit == 0


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, {**GOOD, "AMQP_URL": "http://user:hunter2@broker/", "METRICS_PORT": "x"})
    assert "hunter2" not in str(info.value)
    assert GOOD["PHONET_API_KEY"] not in str(info.value)
    assert len(str(info.value).splitlines()) == 2


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing set but two bad values: every problem in one run, not in rounds (a group's
    rules are judged even when one of its values is bad)."""
    monkeypatch.setenv("PHONET_RECONNECT_MIN_DELAY", "100")
    monkeypatch.setenv("AMQP_RECONNECT_MAX_DELAY", "soon")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).splitlines() == [
        "PHONET_DOMAIN: required (not set)",
        "PHONET_API_KEY: required (or PHONET_API_KEY_FILE)",
        "PHONET_RECONNECT_MIN_DELAY: must not exceed PHONET_RECONNECT_MAX_DELAY",
        "AMQP_RECONNECT_MAX_DELAY: Input should be a valid number, unable to parse string as a"
        " number",
        "PHONET_SUBSCRIBERS: required (a list, `auto`, or PHONET_SUBSCRIBERS_FILE)",
    ]


def test_cross_setting_rules_are_all_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONET_API_KEY_FILE", "/nonexistent/key")
    monkeypatch.setenv("AMQP_RECONNECT_MIN_DELAY", "20")
    monkeypatch.setenv("PHONET_BUFFER_MAX_BYTES", "1048576")
    monkeypatch.setenv("PHONET_MAX_FRAME_BYTES", "1048576")
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, {k: v for k, v in GOOD.items() if k != "PHONET_API_KEY"})
    assert str(info.value).splitlines() == [
        "PHONET_API_KEY_FILE: cannot read /nonexistent/key: No such file or directory",
        "AMQP_RECONNECT_MIN_DELAY: must not exceed AMQP_RECONNECT_MAX_DELAY",
        "PHONET_BUFFER_MAX_BYTES: must be at least twice PHONET_MAX_FRAME_BYTES",
    ]


def test_case_of_enumerations_is_forgiven(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, {**GOOD, "LOG_LEVEL": "debug", "LOG_FORMAT": "TEXT"})
    assert (s.log_level, s.log_format) == ("DEBUG", "text")


def readme_tables() -> tuple[set[str], set[str], set[str]]:
    """The README's settings: the main table, the tuning knobs, the derived ones."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    main, rest = section.split("### Tuning knobs", 1)
    tuning, derived = rest.split("### Derived, not set", 1)

    def names(table: str) -> set[str]:
        return set(re.findall(r"^\| `?([A-Z][A-Z0-9_]+)`? \|", table, flags=re.MULTILINE))

    return names(main), names(tuning), names(derived)


def test_readme_documents_every_setting_and_no_other() -> None:
    main, tuning, derived = readme_tables()
    names = {name.upper() for name in Settings.field_names()}
    assert main & tuning == set(), "a setting in both tables"
    assert names - (main | tuning) == set(), "settings missing from the README tables"
    assert (main | tuning) - names == set(), "README documents settings that do not exist"
    assert derived == set(RETIRED), "the README's derived settings are not the retired ones"


def test_at_most_forty_settings_and_a_short_table_of_knobs() -> None:
    main, tuning, _ = readme_tables()
    assert len(main) <= 40
    assert len(tuning) < len(main) / 2


@pytest.mark.parametrize(
    ("kubernetes", "given", "expected"),
    [
        pytest.param(False, "", "{host}-{pid}", id="host-and-process-elsewhere"),
        pytest.param(True, "", "{host}", id="the-pod-name-in-kubernetes"),
        pytest.param(True, " r7 ", "r7", id="given"),
    ],
)
def test_the_default_replica_id_cannot_clash(
    monkeypatch: pytest.MonkeyPatch, kubernetes: bool, given: str, expected: str
) -> None:
    """Two producers on one host (two systemd units, a compose scale of 2) must not act as
    one: outside Kubernetes the default includes the process id; in Kubernetes it is the
    pod name, stable across a container restart."""
    import os
    import socket

    for key, value in GOOD.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PHONET_REPLICA_ID", given)
    if kubernetes:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    replica = load_settings().replica_id
    assert replica == expected.format(host=socket.gethostname(), pid=os.getpid())


@pytest.mark.parametrize(
    ("interval", "timeout", "window", "grace"),
    [
        pytest.param("0.5", 2.0, 10.0, 5.0, id="defaults"),
        pytest.param("0.15", 0.6, 3.0, 1.5, id="fast"),
    ],
)
def test_the_replicas_timing_follows_the_presence_interval(
    monkeypatch: pytest.MonkeyPatch, interval: str, timeout: float, window: float, grace: float
) -> None:
    s = load(monkeypatch, {**GOOD, "PHONET_PRESENCE_INTERVAL": interval})
    assert s.replicas.presence_timeout == pytest.approx(timeout)
    assert s.replicas.standby_window == pytest.approx(window)
    assert s.replicas.handover_grace == pytest.approx(grace)
    # what the old cross-setting rules demanded holds by construction
    assert s.replicas.presence_timeout >= 2 * s.replicas.phonet_presence_interval
    assert s.replicas.standby_window >= 2 * (
        s.replicas.presence_timeout + s.replicas.phonet_presence_interval
    )


def test_the_sockets_timing_follows_the_ping_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, {**GOOD, "PHONET_PING_INTERVAL": "8", "PHONET_RECONNECT_MAX_DELAY": "30"})
    assert (s.phonet.ping_timeout, s.phonet.healthy_after, s.phonet.auth_retry_delay) == (8, 4, 30)


def test_a_retired_setting_is_ignored_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.app.settings import retired_in_environment

    monkeypatch.setenv("PHONET_PRESENCE_TIMEOUT", "9")
    s = load(monkeypatch, {**GOOD, "PHONET_PRESENCE_INTERVAL": "0.5"})
    assert s.replicas.presence_timeout == 2.0
    assert retired_in_environment() == [
        "PHONET_PRESENCE_TIMEOUT is no longer a setting (it is 4 x PHONET_PRESENCE_INTERVAL);"
        " it is ignored"
    ]
    assert not set(RETIRED) & {name.upper() for name in Settings.field_names()}


def test_an_override_that_is_no_setting_is_a_caller_error() -> None:
    with pytest.raises(TypeError, match="phonet_presence_timeout"):
        load_settings(phonet_presence_timeout=1.0)
