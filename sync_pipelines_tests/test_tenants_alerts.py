"""The ``alerts:`` section of a tenant: channels, defaults, and what is refused (without echoing
what may be a secret)."""

import pytest

from sync_pipelines.tenants import (
    AlertsConfig,
    EmailAlerts,
    load_tenants,
    parse_tenant_set,
    parse_tenants,
)
from sync_pipelines_tests.test_tenants_grading import ZOHO  # the same minimal Zoho section

EMAIL = {
    "to": ["it@school-a.example", "head@school-a.example"],
    "from": "sync@school-a.example",
    "smtp_host": "smtp.school-a.example",
    "smtp_port": 587,
    "smtp_username_env": "A_SMTP_USER",
    "smtp_password_env": "A_SMTP_PASSWORD",
    "starttls": True,
}


def _doc(alerts: object, **extra: object) -> dict:
    return {
        "tenants": [
            {"id": "school_a", "zoho": ZOHO, "alerts": alerts, **extra},
            {"id": "school_b", "zoho": ZOHO},
        ]
    }


def _alerts(alerts: object) -> AlertsConfig:
    return parse_tenants(_doc(alerts))["school_a"].alerts


def _broken(alerts: object) -> str:
    tenant_set = parse_tenant_set(_doc(alerts))
    assert "school_b" in tenant_set.tenants  # one school's bad alerts never stop another
    assert "school_a" not in tenant_set.tenants
    return tenant_set.broken["school_a"]


def test_no_alerts_section_is_no_channel_of_its_own():
    tenants = parse_tenants(_doc(None))
    assert tenants["school_a"].alerts == AlertsConfig() and not tenants["school_a"].alerts.configured
    assert _alerts({}) == AlertsConfig()
    assert load_tenants("tenants.yaml")["demo_school"].alerts == AlertsConfig()


def test_a_webhook_and_an_e_mail_are_read_as_variable_names():
    config = _alerts({"slack_webhook_env": "A_SLACK_WEBHOOK_URL", "email": EMAIL})
    assert config.configured and config.slack_webhook_env == "A_SLACK_WEBHOOK_URL"
    assert config.email == EmailAlerts(
        to=("it@school-a.example", "head@school-a.example"),
        sender="sync@school-a.example",
        smtp_host="smtp.school-a.example",
        smtp_port=587,
        smtp_username_env="A_SMTP_USER",
        smtp_password_env="A_SMTP_PASSWORD",
        starttls=True,
        ssl=False,
    )
    hash(config)  # frozen all the way down, like the rest of a Tenant


def test_e_mail_takes_one_recipient_as_text_port_587_starttls_and_no_login_by_default():
    minimal = _alerts(
        {"email": {"to": "it@school-a.example", "from": "s@school-a.example", "smtp_host": "mx"}}
    )
    assert minimal.email == EmailAlerts(
        ("it@school-a.example",), "s@school-a.example", "mx", 587, None, None, True
    )
    assert not minimal.slack_webhook_env


def test_smtps_turns_starttls_off_unless_both_are_asked_for():
    section = {k: v for k, v in EMAIL.items() if k != "starttls"}
    config = _alerts({"email": {**section, "smtp_port": 465, "ssl": True}})
    assert config.email is not None and (config.email.ssl, config.email.starttls) == (True, False)
    assert "choose one" in _broken({"email": {**section, "ssl": True, "starttls": True}})


def test_a_password_sent_without_tls_is_a_warning():
    tenant_set = parse_tenant_set(_doc({"email": {**EMAIL, "starttls": False}}))
    assert "school_a" in tenant_set.tenants
    assert tenant_set.warnings == (
        "tenants file: tenant school_a: alerts.email: the SMTP password in A_SMTP_PASSWORD travels "
        "unencrypted (starttls and ssl are false)",
    )
    assert parse_tenant_set(_doc({"email": EMAIL})).warnings == ()


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ("hooks", "alerts must be a mapping (slack_webhook_env, email)"),
        ({"slack": "X"}, "alerts has unknown keys 'slack': expected slack_webhook_env, email"),
        ({"email": {**EMAIL, "cc": "x@y.z"}}, "alerts.email has unknown keys 'cc'"),
        ({"email": {**EMAIL, "to": []}}, "alerts.email.to is required: an e-mail address, or a list of them"),
        ({"email": {k: v for k, v in EMAIL.items() if k != "from"}}, "alerts.email.from is required"),
        ({"email": {**EMAIL, "smtp_host": " "}}, "alerts.email.smtp_host is required"),
        (
            {"email": {**EMAIL, "smtp_port": "587"}},
            "alerts.email.smtp_port must be a port number (1-65535), got '587'",
        ),
        ({"email": {**EMAIL, "smtp_port": 70000}}, "smtp_port must be a port number (1-65535), got 70000"),
        ({"email": {**EMAIL, "starttls": "yes"}}, "alerts.email.starttls must be true or false, got 'yes'"),
        (
            {"email": {**EMAIL, "smtp_username_env": None}},
            "give both smtp_username_env and smtp_password_env",
        ),
        (
            {"email": {**EMAIL, "to": ["it@school-a.example\nBcc: all@x.example"]}},
            "alerts.email.to[0] must be",
        ),
        (
            {"email": {**EMAIL, "from": "School A <sync@school-a.example>"}},
            "alerts.email.from must be a plain",
        ),
    ],
)
def test_a_bad_alerts_section_breaks_only_its_school_and_names_the_key(alerts: object, message: str):
    error = _broken(alerts)
    assert error.startswith("tenants file: tenant school_a: ")
    assert message in error


@pytest.mark.parametrize(
    "alerts",
    [
        {"slack_webhook_env": "https://hooks.slack.com/services/T000/B000/pastedSecretToken"},
        {"email": {**EMAIL, "smtp_password_env": "hunter2 pasted password!"}},
    ],
)
def test_a_secret_pasted_in_place_of_a_variable_name_is_refused_and_never_echoed(alerts: dict):
    error = _broken(alerts)
    assert "is not an environment variable name" in error
    assert "pastedSecretToken" not in error and "hunter2" not in error
