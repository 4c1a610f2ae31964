"""Kafka authentication settings reach every client: the services' FastStream broker, the relay's and the
admin clients (returnflow.kafka.client_options) and the CLI's (apphost.ops.kafka_of). The embedded broker
stays plaintext by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from faststream.kafka.security import parse_security
from pydantic import SecretStr

from apphost.ops import OpsError, kafka_of
from returnflow.kafka import broker_security, client_options, make_broker, security_problem
from returnflow.service import require_endpoints
from returnflow.settings import Settings


def sasl(protocol: str = "SASL_PLAINTEXT", **over: object) -> Settings:
    return Settings(
        **{
            "kafka_bootstrap": "kafka-1:19092",
            "database_url": SecretStr("postgresql://db/rf"),
            "kafka_security_protocol": protocol,
            "kafka_sasl_username": "returnflow-refunds",
            "kafka_sasl_password": SecretStr("s3cret"),
            **over,
        }
    )


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert client_options(settings) == {} and broker_security(settings) is None
    assert kafka_of(settings) == {"bootstrap_servers": f"{settings.host}:{settings.embedded_kafka_port}"}


def test_sasl_scram_reaches_aiokafka_and_faststream() -> None:
    settings = sasl()
    wanted = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "returnflow-refunds",
        "sasl_plain_password": "s3cret",
    }
    assert client_options(settings) == wanted
    security = broker_security(settings)
    assert security is not None
    assert {k: v for k, v in parse_security(security).items() if k != "ssl_context"} == wanted
    broker = make_broker(settings, "kafka-1:19092", "returnflow-refunds")
    consumers = broker.config.broker_config.builder.keywords  # what each subscriber's AIOKafkaConsumer gets
    assert wanted.items() <= consumers.items()
    assert kafka_of(settings) == {"bootstrap_servers": "kafka-1:19092", **wanted}


def test_sasl_ssl_trusts_the_given_ca(tmp_path: Path) -> None:
    import ssl

    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    if not ca.is_file():
        pytest.skip("no CA bundle on this machine")
    settings = sasl("SASL_SSL", kafka_ssl_cafile=ca)
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL" and isinstance(options["ssl_context"], ssl.SSLContext)
    parsed = parse_security(broker_security(settings))  # type: ignore[arg-type]
    assert parsed["security_protocol"] == "SASL_SSL" and parsed["ssl_context"] is not None
    assert security_problem(sasl("SASL_SSL", kafka_ssl_cafile=tmp_path / "missing.crt")) is not None


def test_sasl_without_credentials_refuses_to_start_in_one_line() -> None:
    settings = sasl(kafka_sasl_password=None)
    with pytest.raises(SystemExit) as refused:
        require_endpoints(settings)
    assert "\n" not in str(refused.value) and "RETURNFLOW_KAFKA_SASL_PASSWORD" in str(refused.value)
    with pytest.raises(OpsError):
        kafka_of(settings)
    assert require_endpoints(sasl()) == ("postgresql://db/rf", "kafka-1:19092")
