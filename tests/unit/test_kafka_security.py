"""Kafka TLS and SASL (SCRAM) for a real cluster: from HAVIP_* variables to every client's arguments.

No broker here: the settings must build what every aiokafka client is handed, and the clients
must take it. Reaching a real SASL_SSL listener needs a cluster (deploy/README.md).
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from services.runtime.kafka import new_admin, new_consumer, new_producer, security_options
from services.runtime.settings import Settings

CA_NAME = "havip-test-cluster-ca"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA, as Strimzi's <cluster>-cluster-ca-cert Secret holds one."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("kafka-ca") / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def strimzi_env(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    """What deploy/k8s sets for a service on the prod overlay's SCRAM-over-TLS listener."""
    for name, value in {
        "HAVIP_KAFKA_BOOTSTRAP": "havip-kafka-kafka-bootstrap:9093",
        "HAVIP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "HAVIP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "HAVIP_KAFKA_SASL_USERNAME": "havip-gateway",
        "HAVIP_KAFKA_SASL_PASSWORD": "s3cret",
        "HAVIP_KAFKA_SSL_CAFILE": str(ca_file),
    }.items():
        monkeypatch.setenv(name, value)


def _without_context(options: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in options.items() if k != "ssl_context"}


def _trusts_only_our_ca(context: object) -> None:
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # A certificate's subject: relative distinguished names, each of (attribute, value) pairs.
    names = [cast(tuple[tuple[tuple[str, str], ...], ...], ca["subject"]) for ca in context.get_ca_certs()]
    subjects = [dict(part[0] for part in name) for name in names]
    assert {"commonName": CA_NAME} in subjects


def test_by_default_clients_speak_plaintext_as_the_embedded_broker_does() -> None:
    settings = Settings()
    assert security_options(settings) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.usefixtures("strimzi_env")
def test_scram_over_tls_from_the_environment_builds_aiokafka_arguments() -> None:
    options = security_options(Settings())
    assert _without_context(options) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "havip-gateway",
        "sasl_plain_password": "s3cret",
    }
    _trusts_only_our_ca(options["ssl_context"])


def test_tls_alone_and_scram_without_tls(ca_file: Path) -> None:
    tls = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(ca_file))
    assert _without_context(security_options(tls)) == {"security_protocol": "SSL"}
    _trusts_only_our_ca(security_options(tls)["ssl_context"])

    plain = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p")
    assert "ssl_context" not in security_options(plain)
    assert security_options(plain)["security_protocol"] == "SASL_PLAINTEXT"


def test_incomplete_credentials_are_refused_when_the_first_client_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAVIP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HAVIP_KAFKA_SASL_USERNAME", "havip-quota")
    settings = Settings()  # `havip migrate` needs no broker: the settings load without a password
    for build in (security_options, new_producer):
        with pytest.raises(ValueError, match="HAVIP_KAFKA_SASL_USERNAME and HAVIP_KAFKA_SASL_PASSWORD"):
            build(settings)
    monkeypatch.setenv("HAVIP_KAFKA_SASL_PASSWORD", "s3cret")
    with pytest.raises(ValueError, match="go together"):
        security_options(Settings(kafka_ssl_certfile="/etc/havip/kafka/user.crt"))
    with pytest.raises(ValidationError):
        Settings(kafka_sasl_mechanism="GSSAPI")


def test_the_password_is_not_shown(monkeypatch: pytest.MonkeyPatch, strimzi_env: None) -> None:
    assert "s3cret" not in repr(Settings())


@pytest.mark.usefixtures("strimzi_env")
async def test_every_client_factory_hands_them_to_aiokafka() -> None:
    settings = Settings()
    producer = new_producer(settings)
    consumer = new_consumer(settings, "havip-gateway")
    admin = new_admin(settings)
    try:
        for client in (producer.client, consumer._client, admin._client):
            assert client._security_protocol == "SASL_SSL"
            assert client._sasl_mechanism == "SCRAM-SHA-512"
            assert client._sasl_plain_username == "havip-gateway"
            _trusts_only_our_ca(client._ssl_context)
    finally:
        await admin.close()
        await consumer.stop()
        await producer.stop()
