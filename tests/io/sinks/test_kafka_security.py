"""The Kafka sink's security settings against a real secured broker (no mocks).

One Kafka 4.4 broker (KRaft, combined broker+controller) started by this module listens on:

- PLAINTEXT: the listener KafkaService probes for readiness, also the inter-broker listener; the
  tests only use it to add the SCRAM user;
- SASL_PLAINTEXT with PLAIN (user `capture`, password in the broker's JAAS config) and
  SCRAM-SHA-512;
- SSL: a certificate for 127.0.0.1 signed by a throw-away CA made with openssl, in a PKCS12
  keystore;
- SASL_SSL with SCRAM-SHA-512 (TLS with that CA, then SCRAM).

The tests write chunks through sinks built from configs whose password comes from
`${KAFKA_PASSWORD}`, read them back byte for byte with the same credentials, and check that a wrong
password or an untrusted certificate gives a clear preflight error that never shows the password,
and that the password shows neither in reprs, nor in logs, nor in `streamtap validate` output.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import pytest
import yaml

from streamtap.chunk import Chunk, make_chunk
from streamtap.errors import Unreachable
from streamtap.io.sinks.kafka import KafkaSink, WriteChunksToKafka, read_kafka_chunks
from streamtap.io.sinks.kafka.preflight import check_topic
from streamtap.plugins import parse_config
from streamtap.services.kafka import KafkaService
from tests.fixtures.kafka import free_port_block, unique_topic
from tests.helpers import STREAMTAP

OPENSSL = "/usr/bin/openssl"
USER = "capture"


@dataclass
class SecuredKafka:
    service: KafkaService
    plaintext: str  # host:port of each listener
    sasl: str  # SASL_PLAINTEXT: PLAIN and SCRAM-SHA-512
    tls: str  # SSL
    sasl_tls: str  # SASL_SSL: SCRAM-SHA-512
    ca_file: str  # PEM of the CA that signed the broker's certificate
    plain_password: str
    scram_password: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_pki(directory: Path, keystore_password: str) -> tuple[Path, Path]:
    """A self-signed CA and a broker certificate for 127.0.0.1 in a PKCS12 keystore."""
    directory.mkdir(parents=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=streamtap-test-ca", cwd=directory)
    _openssl("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1",
             cwd=directory)
    (directory / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "broker.pem", "-days", "2", "-extfile", "broker.ext",
             cwd=directory)
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile",
             "ca.pem", "-name", "broker", "-out", "broker.p12", "-passout",
             f"pass:{keystore_password}", cwd=directory)
    return directory / "ca.pem", directory / "broker.p12"


def _add_scram_user(bootstrap_servers: str, user: str, password: str) -> None:
    """Adds a SCRAM-SHA-512 credential (AlterUserScramCredentials) and waits until it is live."""
    from kafka import KafkaAdminClient
    from kafka.admin import UserScramCredentialUpsertion

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="streamtap-tests")
    try:
        result = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, "SCRAM-SHA-512", password)]
        )
        assert result == {user: None}, result
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            described = admin.describe_user_scram_credentials([user])
            if described.get(user, {}).get("credential_infos"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"SCRAM credential of {user} did not show up: {described}")
    finally:
        admin.close()


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory):
    """The secured broker described in the module docstring, with its addresses and passwords."""
    work = tmp_path_factory.mktemp("secured-kafka")
    keystore_password = secrets.token_hex(8)
    ca_file, keystore = _make_pki(work / "pki", keystore_password)
    plain_password = f"plain-{secrets.token_hex(10)}"
    scram_password = f"scram-{secrets.token_hex(10)}"
    base = free_port_block(5)
    ports = {
        "PLAINTEXT": base,
        "CONTROLLER": base + 1,
        "CLIENT_SASL": base + 2,
        "CLIENT_TLS": base + 3,
        "CLIENT_SASL_TLS": base + 4,
    }
    client_listeners = ("PLAINTEXT", "CLIENT_SASL", "CLIENT_TLS", "CLIENT_SASL_TLS")
    scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    broker_config = {
        "listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
        "advertised.listeners": ",".join(
            f"{name}://127.0.0.1:{ports[name]}" for name in client_listeners
        ),
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,CLIENT_SASL:SASL_PLAINTEXT,"
            "CLIENT_TLS:SSL,CLIENT_SASL_TLS:SASL_SSL"
        ),
        "listener.name.client_sasl.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "listener.name.client_sasl.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USER}="{plain_password}";'
        ),
        "listener.name.client_sasl.scram-sha-512.sasl.jaas.config": scram_jaas,
        "listener.name.client_sasl_tls.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.client_sasl_tls.scram-sha-512.sasl.jaas.config": scram_jaas,
        # Used by both TLS listeners (CLIENT_TLS, CLIENT_SASL_TLS).
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.password": keystore_password,
        "ssl.key.password": keystore_password,
    }
    service = KafkaService(
        state_dir=work / "state", port=base, controller_port=base + 1, broker_config=broker_config
    )
    service.up()
    try:
        address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        _add_scram_user(address["PLAINTEXT"], USER, scram_password)
        yield SecuredKafka(
            service=service,
            plaintext=address["PLAINTEXT"],
            sasl=address["CLIENT_SASL"],
            tls=address["CLIENT_TLS"],
            sasl_tls=address["CLIENT_SASL_TLS"],
            ca_file=str(ca_file),
            plain_password=plain_password,
            scram_password=scram_password,
        )
    finally:
        service.stop_all_brokers(kill=True)  # throw-away data: skip the controlled shutdown


# --- helpers -----------------------------------------------------------------------------------


def make_chunks(count: int, stream: str = "sensor1") -> list[Chunk]:
    rng = random.Random(count)
    sizes = (1, 65536, 4096, 7, 0x8000 + 3)
    return [
        make_chunk(
            stream,
            f"session-{stream}",
            seq,
            seq * 70000,
            rng.randbytes(sizes[seq % len(sizes)]),
            1_796_000_000.0 + seq / 4,
            discontinuity=(seq == 0),
            tags={"content-type": "application/octet-stream", "user.site": "Zürich"},
        )
        for seq in range(count)
    ]


def write_chunks(chunks: list[Chunk], transform: WriteChunksToKafka) -> None:
    pipeline = beam.Pipeline(runner="FnApiRunner")
    _ = pipeline | "Chunks" >> beam.Create(chunks) | "Write" >> transform
    pipeline.run().wait_until_finish()


def kafka_config(sink: dict) -> dict:
    return {
        "sources": [{"id": "sensor1", "type": "synthetic"}],
        "chunk": {"max_bytes": 65536},
        "sinks": [{"type": "kafka", "create_topic": True, **sink}],
    }


def sasl_sink(bootstrap_servers: str, topic: str, mechanism: str, **extra) -> dict:
    security = "SASL_SSL" if "ssl_cafile" in extra else "SASL_PLAINTEXT"
    return {
        "bootstrap_servers": bootstrap_servers,
        "topic": topic,
        "security_protocol": security,
        "sasl_mechanism": mechanism,
        "sasl_username": USER,
        "sasl_password": "${KAFKA_PASSWORD}",
        **extra,
    }


def security_of(sink: KafkaSink) -> dict:
    return sink.security()


def assert_not_in_logs(caplog: pytest.LogCaptureFixture, *passwords: str) -> None:
    """No captured record (DEBUG included: kafka-python's wire dumps) shows any of `passwords`."""
    assert caplog.records, "expected some log records to search"
    leaks = [
        f"{record.name}: {record.getMessage()[:300]}"
        for record in caplog.records
        for password in passwords
        if password in f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
    ]
    assert not leaks, "password in log records:\n" + "\n".join(leaks)
    for password in passwords:
        assert password not in caplog.text


# --- SASL PLAIN --------------------------------------------------------------------------------


def test_sasl_plain_round_trip_with_the_password_from_the_environment(
    secured_kafka, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kafka")  # `streamtap` run in-process quiets it
    password = secured_kafka.plain_password
    monkeypatch.setenv("KAFKA_PASSWORD", password)
    topic = unique_topic("sasl-plain")
    config = parse_config(kafka_config(sasl_sink(secured_kafka.sasl, topic, "PLAIN")))
    (sink,) = config.sinks
    assert sink.sasl_password == password  # ${KAFKA_PASSWORD} was substituted
    for text in (repr(config), repr(sink), str(config), repr(sink.transform(config))):
        assert password not in text

    assert sink.preflight(config) == []  # reaches the brokers over SASL and creates the topic
    chunks = make_chunks(12)
    write_chunks(chunks, sink.transform(config))

    back = list(read_kafka_chunks(secured_kafka.sasl, topic, timeout=15, **security_of(sink)))
    assert back == chunks  # every field, payloads byte for byte
    assert all(chunk.checksum_ok() for chunk in back)
    assert_not_in_logs(caplog, password)


def test_sasl_plain_wrong_password_is_an_authentication_error(secured_kafka, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kafka")  # `streamtap` run in-process quiets it
    monkeypatch.setattr(KafkaSink, "preflight_timeout", 3.0)
    wrong = f"wrong-{secrets.token_hex(8)}"
    monkeypatch.setenv("KAFKA_PASSWORD", wrong)
    topic = unique_topic("sasl-wrong")
    config = parse_config(kafka_config(sasl_sink(secured_kafka.sasl, topic, "PLAIN")))

    (error,) = config.sinks[0].preflight(config)
    assert "authentication failed" in error and "sasl_password" in error, error
    assert "user 'capture'" in error and "PLAIN" in error, error
    # Not an outage: `streamtap run` refuses to start instead of retrying against bad credentials.
    assert not isinstance(error, Unreachable)
    assert wrong not in error and secured_kafka.plain_password not in error
    assert_not_in_logs(caplog, wrong)

    # The listener really demands authentication: a client without SASL does not get in.
    plaintext = KafkaSink(bootstrap_servers=secured_kafka.sasl, topic=topic)
    (error,) = check_topic(plaintext, max_chunk_bytes=65536, timeout=2)
    assert f"{secured_kafka.sasl} accepts connections though" in error, error
    assert "requires TLS or SASL authentication" in error and "(it is PLAINTEXT)" in error, error


def test_cli_validate_never_shows_the_password(secured_kafka, tmp_path):
    topic = unique_topic("sasl-cli")
    config_file = tmp_path / "capture.yaml"
    config_file.write_text(
        yaml.safe_dump(kafka_config(sasl_sink(secured_kafka.sasl, topic, "PLAIN")))
    )
    wrong = f"wrong-{secrets.token_hex(8)}"

    def validate(password: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*STREAMTAP, "--log-level", "debug", "validate", str(config_file)],
            env={**os.environ, "KAFKA_PASSWORD": password},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # Both at once: the wrong password waits out the 10 s preflight timeout.
    right_run, wrong_run = validate(secured_kafka.plain_password), validate(wrong)
    out, err = right_run.communicate(timeout=120)
    assert right_run.returncode == 0, out + err
    assert f"{config_file}: OK (1 source(s), 1 sink(s))" in out
    assert secured_kafka.plain_password not in out + err

    out, err = wrong_run.communicate(timeout=120)
    assert wrong_run.returncode != 0, out + err
    assert "SASL authentication failed" in err and "cannot run" in err, err
    assert wrong not in out + err and secured_kafka.plain_password not in out + err


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_round_trip_with_the_ca_and_certificate_error_without(secured_kafka):
    topic = unique_topic("tls")
    tls = {"security_protocol": "SSL", "ssl_cafile": secured_kafka.ca_file}
    sink = KafkaSink(bootstrap_servers=secured_kafka.tls, topic=topic, create_topic=True, **tls)
    assert check_topic(sink, max_chunk_bytes=65536) == []
    chunks = make_chunks(10, stream="radio1")
    write_chunks(chunks, WriteChunksToKafka(sink))
    assert list(read_kafka_chunks(secured_kafka.tls, topic, timeout=15, **tls)) == chunks

    # Without ssl_cafile the client trusts only the system CAs, which did not sign the broker.
    untrusting = KafkaSink(
        bootstrap_servers=secured_kafka.tls, topic=topic, security_protocol="SSL"
    )
    (error,) = check_topic(untrusting, max_chunk_bytes=65536, timeout=2)
    assert error.startswith("kafka sink.ssl_cafile: the TLS certificate of Kafka at "), error
    assert "CERTIFICATE_VERIFY_FAILED" in error and "self-signed certificate" in error, error
    assert not isinstance(error, Unreachable)
    with pytest.raises(ConnectionError):
        list(read_kafka_chunks(secured_kafka.tls, topic, timeout=2, security_protocol="SSL"))


# --- SCRAM-SHA-512 over TLS --------------------------------------------------------------------


def test_scram_sha_512_over_tls_round_trip_and_wrong_password(secured_kafka, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kafka")  # `streamtap` run in-process quiets it
    monkeypatch.setattr(KafkaSink, "preflight_timeout", 3.0)
    password = secured_kafka.scram_password
    monkeypatch.setenv("KAFKA_PASSWORD", password)
    topic = unique_topic("scram")
    sink_settings = sasl_sink(
        secured_kafka.sasl_tls, topic, "SCRAM-SHA-512", ssl_cafile=secured_kafka.ca_file
    )
    config = parse_config(kafka_config(sink_settings))
    (sink,) = config.sinks
    assert sink.security_protocol == "SASL_SSL" and password not in repr(config)

    assert sink.preflight(config) == []
    chunks = make_chunks(8)
    write_chunks(chunks, sink.transform(config))
    back = list(read_kafka_chunks(secured_kafka.sasl_tls, topic, timeout=15, **security_of(sink)))
    assert back == chunks

    # The same SCRAM user works on the SASL_PLAINTEXT listener too.
    no_tls = {**security_of(sink), "security_protocol": "SASL_PLAINTEXT", "ssl_cafile": None}
    assert list(read_kafka_chunks(secured_kafka.sasl, topic, timeout=15, **no_tls)) == chunks

    wrong = f"wrong-{secrets.token_hex(8)}"
    monkeypatch.setenv("KAFKA_PASSWORD", wrong)
    config = parse_config(kafka_config(sink_settings))
    (error,) = config.sinks[0].preflight(config)
    assert "SASL authentication failed" in error and "SCRAM-SHA-512" in error, error
    assert not isinstance(error, Unreachable)
    assert wrong not in error and password not in error
    assert_not_in_logs(caplog, password, wrong)
