"""Opening kafka-python clients: the settings all of them share, and the message when none answers.

Every producer, consumer and admin client of the Kafka sink is opened by `open_client`, which
installs streamtap's kafka-python changes first (compat.py) and registers the SASL password with
the log filter, so nothing of that happens before a client is actually needed.
"""

from __future__ import annotations

from typing import Any, Mapping

from streamtap.io.sinks.kafka import compat

__all__ = ["SECURITY_SETTINGS", "client_settings", "open_client", "unreachable"]

# KafkaSink's security fields -> kafka-python's names for them.
SECURITY_SETTINGS = {
    "security_protocol": "security_protocol",
    "sasl_mechanism": "sasl_mechanism",
    "sasl_username": "sasl_plain_username",
    "sasl_password": "sasl_plain_password",
    "ssl_cafile": "ssl_cafile",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
}


def client_settings(bootstrap_servers: str, security: Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python settings for these brokers and security fields (unset ones left out).

    `security`: KafkaSink's security fields by name (KafkaSink.security()); TypeError on others.
    """
    unknown = set(security) - set(SECURITY_SETTINGS)
    if unknown:
        raise TypeError(f"unknown Kafka security option(s): {', '.join(sorted(unknown))}")
    settings: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
    }
    for ours, theirs in SECURITY_SETTINGS.items():
        if security.get(ours) is not None:
            settings[theirs] = security[ours]
    return settings


def open_client(
    client_class: type, bootstrap_servers: str, security: Mapping[str, Any], **settings: Any
):
    """Opens a kafka-python client (KafkaProducer, KafkaConsumer, KafkaAdminClient).

    Installs compat.py's changes (once per process) and hides the password in kafka-python's
    logs before the client exists; `settings` are passed on with the shared ones.
    """
    compat.install()
    compat.hide_password(security.get("sasl_password"))
    return client_class(**client_settings(bootstrap_servers, security), **settings)


def unreachable(bootstrap_servers: str, error: BaseException) -> str:
    """The message for brokers that do not answer."""
    return (
        f"cannot reach Kafka at {bootstrap_servers}: is it running? (streamtap services up "
        f"kafka) [{error}]"
    )
