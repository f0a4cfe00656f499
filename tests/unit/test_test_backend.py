"""How the tests choose their broker and PostgreSQL (tests/container_tools.choose), without an engine."""

from __future__ import annotations

import pytest

from tests.container_tools import Backend, BrokerKind, Unavailable, choose

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_auto_without_an_engine_falls_back_to_embedded_and_says_why() -> None:
    choice = choose(NO_ENGINE)
    assert choice.backend is Backend.EMBEDDED and choice.broker is BrokerKind.TANSU
    assert choice.describe().startswith("test backend: embedded (no Docker engine answers")
    assert "\n" not in choice.describe()


def test_containers_without_an_engine_is_one_clear_refusal() -> None:
    with pytest.raises(Unavailable, match="^no Docker engine answers at unix:///nonexistent") as refused:
        choose({**NO_ENGINE, "HAVIP_TEST_BACKEND": "containers"})
    assert "\n" not in str(refused.value)


def test_embedded_asks_no_engine() -> None:
    assert choose({"HAVIP_TEST_BACKEND": "embedded", "DOCKER_HOST": "tcp://192.0.2.1:1"}).backend is Backend.EMBEDDED


def test_a_broker_and_a_database_given_are_used_as_they_are() -> None:
    given = {"HAVIP_TEST_KAFKA": "kafka:9092", "HAVIP_TEST_DATABASE_URL": "postgresql://db/x"}
    for backend in ("auto", "env"):
        choice = choose({**NO_ENGINE, **given, "HAVIP_TEST_BACKEND": backend})
        assert choice.backend is Backend.ENV and choice.broker is BrokerKind.APACHE_KAFKA


@pytest.mark.parametrize("backend", ["auto", "env"])
def test_half_of_an_environment_is_refused_not_mixed(backend: str) -> None:
    with pytest.raises(Unavailable, match="HAVIP_TEST_DATABASE_URL not set"):
        choose({**NO_ENGINE, "HAVIP_TEST_KAFKA": "kafka:9092", "HAVIP_TEST_BACKEND": backend})


def test_an_unknown_backend_names_the_ones_there_are() -> None:
    with pytest.raises(Unavailable, match="'docker' is none of auto, embedded, containers, env"):
        choose({"HAVIP_TEST_BACKEND": "docker"})
