"""The test fixtures' database choice falls back cleanly where no Docker engine answers."""

from tests.conftest import _testcontainers_postgres


def test_testcontainers_without_a_docker_engine_falls_back_to_sqlite(monkeypatch):
    monkeypatch.setenv("TWOLINE_TEST_TESTCONTAINERS", "1")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert _testcontainers_postgres() is None


def test_testcontainers_is_not_tried_unless_asked(monkeypatch):
    monkeypatch.delenv("TWOLINE_TEST_TESTCONTAINERS", raising=False)
    assert _testcontainers_postgres() is None
