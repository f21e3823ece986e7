"""The deployment files: docker-compose.yml, deploy/Dockerfile, deploy/postgres/init.sh, deploy/otel/.

There is no Docker engine where the suite runs, so the files are checked for the properties the
design asks of them. Each `check_*` takes the parsed data and raises AssertionError naming what is
wrong; the negative tests at the end feed them broken copies to show that every check can fail.
Where the machine allows, the parts are also run for real: init.sh against a private Postgres
cluster, and nats-server with the compose command and secrets made by the README's generator.
"""

import asyncio
import copy
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from twoline.natsserver import ADMINS, USERS
from twoline.stack import SERVICES

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
INIT_SCRIPT = REPO / "deploy" / "postgres" / "init.sh"
COLLECTOR = REPO / "deploy" / "otel" / "collector.yaml"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
DEPLOY_README = REPO / "deploy" / "README.md"
NATS_CONF = REPO / "deploy" / "nats" / "nats-server.conf"


@dataclass(frozen=True)
class Expected:
    """What one service must look like in compose."""

    name: str
    package: str
    prefix: str
    port: int
    zone: str
    # NATS links: (settings field prefix, user)
    nats: tuple[tuple[str, str], ...]

    @property
    def database(self) -> str:
        return self.name.replace("-", "_")

    @property
    def secrets(self) -> set[str]:
        """The only deploy/.env secrets this service may receive."""
        own = {f"{self.database.upper()}_DB_PASSWORD"}
        return own | {USERS[user] + "_PLAIN" for _, user in self.nats}


ZONES = {
    "intake": "A",
    "consent": "A",
    "referral": "bridge",
    "case-resolution": "B",
    "audit": "oversight",
}
EXPECTED = tuple(
    Expected(
        name=s.name,
        package=s.package,
        prefix=s.prefix,
        port=s.port,
        zone=ZONES[s.name],
        nats=(("NATS", "referral-fl"), ("NATS_SL", "referral-sl"))
        if s.name == "referral"
        else (("NATS", s.nats_user),),
    )
    for s in SERVICES
)
# Settings every service may read from deploy/.env besides its own secrets (not secrets).
SHARED_SETTINGS = {"TWOLINE_AUTH_JWKS_URL", "TWOLINE_AUTH_ISSUER", "TWOLINE_AUTH_AUDIENCE"}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])[^}]*)?\}")
DATABASE_URL = re.compile(
    r"^postgresql://(?P<role>[^:@/]+):(?P<password>.+)@(?P<host>[^:@/]+):(?P<port>\d+)/(?P<db>[^/?]+)$"
)


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services_of(compose: dict[str, Any]) -> dict[str, Any]:
    return compose.get("services") or {}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed YAML value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def interpolations(value: Any) -> Iterator[re.Match[str]]:
    """Every ${VAR...} compose would interpolate anywhere in `value` ($$ is a literal dollar)."""
    for text in strings(value):
        yield from VARIABLE.finditer(text.replace("$$", ""))


def variables(value: Any) -> set[str]:
    return {m[1] for m in interpolations(value)}


def required_variables(compose: dict[str, Any]) -> set[str]:
    return {m[1] for m in interpolations(compose) if m[2] in (":?", "?")}


def repo_path(source: str) -> str:
    return source.removeprefix("./")


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of every volume entry that is a path in the repository."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mode = "ro" if volume.get("read_only") else "rw"
                mounts.append((volume["source"], volume["target"], mode))
            continue
        parts = volume.split(":")
        if parts[0].startswith((".", "/")):
            mounts.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return mounts


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """target -> volume name of every named-volume entry."""
    volumes = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                volumes[volume["target"]] = volume["source"]
            continue
        parts = volume.split(":")
        if not parts[0].startswith((".", "/")):
            volumes[parts[1]] = parts[0]
    return volumes


def healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    assert test, "no healthcheck"
    return " ".join(test) if isinstance(test, list) else str(test)


def find_service(compose: dict[str, Any], image_part: str) -> tuple[str, dict[str, Any]]:
    found = [(n, s) for n, s in services_of(compose).items() if image_part in s.get("image", "")]
    assert found, f"no service runs an image containing {image_part!r}"
    return found[0]


# ---------------------------------------------------------------- checks on docker-compose.yml


def check_postgres(compose: dict[str, Any]) -> None:
    postgres = services_of(compose).get("postgres")
    assert postgres, "no postgres service"
    assert postgres.get("image", "").startswith("postgres:"), postgres.get("image")
    inits = [m for m in bind_mounts(postgres) if m[1].startswith("/docker-entrypoint-initdb.d/")]
    assert inits, "postgres mounts no init script into /docker-entrypoint-initdb.d"
    for source, _, _ in inits:
        assert repo_path(source).startswith("deploy/"), f"init script {source} not from deploy/"
    assert any(t.startswith("/var/lib/postgresql") for t in named_volumes(postgres)), (
        "postgres keeps its data on no named volume"
    )
    assert "pg_isready" in healthcheck_text(postgres)
    env = environment(postgres)
    for expected in EXPECTED:
        variable = f"{expected.database.upper()}_DB_PASSWORD"
        assert variable in env, f"init script gets no {variable}"


def check_nats(compose: dict[str, Any]) -> None:
    nats = services_of(compose).get("nats")
    assert nats, "no nats service"
    command = nats.get("command") or []
    assert isinstance(command, list) and "-c" in command, "nats is not started with -c CONFIG"
    config_path = command[command.index("-c") + 1]
    mounted = {target: (source, mode) for source, target, mode in bind_mounts(nats)}
    assert config_path in mounted, f"{config_path} is not mounted"
    source, mode = mounted[config_path]
    assert repo_path(source) == "deploy/nats/nats-server.conf", source
    assert mode == "ro", "the NATS config must be mounted read-only"
    env = environment(nats)
    missing = set(USERS.values()) - set(env)
    assert not missing, f"nats gets no password hash for {sorted(missing)}"
    store = env.get("NATS_STORE_DIR", "")
    assert store.startswith('"') and store.endswith('"'), "NATS_STORE_DIR must be quoted"
    store_path = store.strip('"')
    volumes = named_volumes(nats)
    assert any(store_path == t or store_path.startswith(t.rstrip("/") + "/") for t in volumes), (
        f"JetStream storage {store_path} is on no named volume"
    )
    assert "-m" in command, "no monitoring port (-m) for the health check"
    monitor = command[command.index("-m") + 1]
    check = healthcheck_text(nats)
    assert f":{monitor}/healthz" in check and "js-enabled-only=true" in check, check
    assert "-a" in command and command[command.index("-a") + 1] == "0.0.0.0", (
        "nats must listen on all interfaces in its container (the config says 127.0.0.1)"
    )


def check_provision(compose: dict[str, Any]) -> None:
    provision = services_of(compose).get("nats-provision")
    assert provision, "no nats-provision service"
    command = provision.get("command") or []
    assert command[:3] == ["twoline", "nats", "provision"], command
    assert command[command.index("--url") + 1] == "nats://nats:4222"
    env = environment(provision)
    for admin in ADMINS.values():
        assert USERS[admin] + "_PLAIN" in env, f"provisioning lacks {admin}'s password"
    condition = (provision.get("depends_on") or {}).get("nats", {}).get("condition")
    assert condition == "service_healthy", "provisioning must wait for nats to be healthy"


def check_services(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    for expected in EXPECTED:
        service = services.get(expected.name)
        assert service, f"no {expected.name} service"
        command = service.get("command") or []
        assert f"{expected.package}.app:create_app" in command and "--factory" in command, command
        assert command[command.index("--port") + 1] == str(expected.port), command
        assert command[command.index("--host") + 1] == "0.0.0.0", command
        check = healthcheck_text(service)
        assert f":{expected.port}/healthz" in check, f"{expected.name}: healthcheck {check}"
        depends = service.get("depends_on")
        assert isinstance(depends, dict), f"{expected.name}: depends_on needs conditions"
        for dependency in ("postgres", "nats"):
            condition = (depends.get(dependency) or {}).get("condition")
            assert condition == "service_healthy", f"{expected.name} -> {dependency}: {condition}"
        condition = (depends.get("nats-provision") or {}).get("condition")
        assert condition == "service_completed_successfully", f"{expected.name} -> provision"
        env = environment(service)
        assert env.get(f"{expected.prefix}NATS_URL") == "nats://nats:4222"
        for field, user in expected.nats:
            assert env.get(f"{expected.prefix}{field}_USER") == user, f"{expected.name}: {field}"
            password = env.get(f"{expected.prefix}{field}_PASSWORD", "")
            assert variables(password) == {USERS[user] + "_PLAIN"}, f"{expected.name}: {password}"
        for setting in ("AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE"):
            assert env.get(f"{expected.prefix}{setting}"), f"{expected.name}: no {setting}"


def check_image(compose: dict[str, Any]) -> None:
    """One twoline image, built by one service that every service waits for, pulled by none."""
    services = services_of(compose)
    image = services["intake"].get("image")
    users = {n: s for n, s in services.items() if s.get("image") == image}
    assert {e.name for e in EXPECTED} | {"nats-provision"} <= set(users), sorted(users)
    builders = [n for n, s in users.items() if s.get("build")]
    assert len(builders) == 1, f"{image} must be built by exactly one service, not {builders}"
    build = users[builders[0]]["build"]
    assert isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile", build
    for name, service in users.items():
        if name not in builders:
            assert service.get("pull_policy") == "never", f"{name} would try to pull {image}"
    for expected in EXPECTED:
        depends = services[expected.name].get("depends_on") or {}
        assert builders[0] in depends, f"{expected.name} could start before {image} is built"


def check_databases(compose: dict[str, Any]) -> None:
    """Each service's DATABASE_URL names its own database and role; none shares either."""
    services = services_of(compose)
    databases: dict[str, str] = {}
    roles: dict[str, str] = {}
    for expected in EXPECTED:
        env = environment(services.get(expected.name) or {})
        url = env.get(f"{expected.prefix}DATABASE_URL", "")
        match = DATABASE_URL.match(url)
        assert match, f"{expected.name}: not a postgresql:// URL: {url!r}"
        assert match["host"] == "postgres", f"{expected.name}: host {match['host']}"
        assert match["db"] == expected.database, f"{expected.name}: database {match['db']}"
        assert match["role"] == expected.database, f"{expected.name}: role {match['role']}"
        password_vars = variables(match["password"])
        assert password_vars == {f"{expected.database.upper()}_DB_PASSWORD"}, password_vars
        assert match["db"] not in databases, (
            f"{expected.name} shares {databases.get(match['db'])}'s database"
        )
        assert match["role"] not in roles, (
            f"{expected.name} shares {roles.get(match['role'])}'s role"
        )
        databases[match["db"]] = expected.name
        roles[match["role"]] = expected.name


def check_secret_isolation(compose: dict[str, Any]) -> None:
    """F1 in deployment: a container receives only its own secrets (never all of deploy/.env)."""
    services = services_of(compose)
    for name, service in services.items():
        assert "env_file" not in service, f"{name}: env_file would hand it every secret"
    for expected in EXPECTED:
        received = variables(services.get(expected.name) or {}) - SHARED_SETTINGS
        foreign = received - expected.secrets
        assert not foreign, f"{expected.name} (zone {expected.zone}) receives {sorted(foreign)}"
    for name, service in services.items():
        if name in {"nats", "postgres"} | {e.name for e in EXPECTED}:
            continue
        plain = {v for v in variables(service) if v.endswith("_PLAIN")}
        admins = {USERS[a] + "_PLAIN" for a in ADMINS.values()}
        assert plain <= admins, f"{name} receives service passwords {sorted(plain - admins)}"
    nats_received = variables(services.get("nats") or {})
    assert not {v for v in nats_received if v.endswith("_PLAIN")}, "nats needs hashes only"


def check_networks(compose: dict[str, Any]) -> None:
    """Zone B and oversight containers share no network with zone-A ones; only the bridge spans."""
    services = services_of(compose)

    def networks(name: str) -> set[str]:
        value = services[name].get("networks")
        assert value, f"{name}: no explicit networks (it would join `default` with everyone)"
        return set(value)

    for a in EXPECTED:
        for b in EXPECTED:
            if a.name >= b.name or "bridge" in (a.zone, b.zone) or a.zone == b.zone:
                continue
            shared = networks(a.name) & networks(b.name)
            assert not shared, (
                f"{a.name} (zone {a.zone}) and {b.name} (zone {b.zone}) share {shared}"
            )
    referral = networks("referral")
    for expected in EXPECTED:
        if expected.zone in ("A", "B"):
            assert networks(expected.name) & referral, f"{expected.name} cannot reach the bridge"
    for infra in ("postgres", "nats"):
        for expected in EXPECTED:
            assert networks(infra) & networks(expected.name), (
                f"{expected.name} cannot reach {infra}"
            )


def check_telemetry(compose: dict[str, Any], collector: dict[str, Any]) -> None:
    name, service = find_service(compose, "opentelemetry-collector")
    sources = {repo_path(s) for s, _, _ in bind_mounts(service)}
    assert "deploy/otel/collector.yaml" in sources, "the collector does not get deploy/otel/"
    jaeger_name, jaeger = find_service(compose, "jaegertracing/")
    ports = " ".join(str(p) for p in jaeger.get("ports") or [])
    assert "16686" in ports, "the Jaeger UI is not published"
    services = services_of(compose)
    for expected in EXPECTED:
        env = environment(services.get(expected.name) or {})
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        assert endpoint.startswith(f"http://{name}:"), f"{expected.name}: OTLP to {endpoint!r}"
        assert env.get("OTEL_SERVICE_NAME") == expected.name, expected.name
        netset = set(services[expected.name].get("networks") or [])
        assert netset & set(service.get("networks") or []), f"{expected.name} cannot reach {name}"
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert {"grpc", "http"} <= set(protocols), protocols
    port = endpoint.rsplit(":", 1)[1].rstrip("/")
    assert protocols["http"]["endpoint"].endswith(f":{port}"), "services send to a closed port"
    exporters = collector["service"]["pipelines"]["traces"]["exporters"]
    endpoints = [collector["exporters"][e].get("endpoint", "") for e in exporters]
    assert any(e.startswith(f"{jaeger_name}:") or f"//{jaeger_name}:" in e for e in endpoints), (
        f"traces are not exported to {jaeger_name}: {endpoints}"
    )
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


def check_mounts_exist(compose: dict[str, Any], repo: Path) -> None:
    for name, service in services_of(compose).items():
        for source, _, _ in bind_mounts(service):
            assert (repo / source).exists(), f"{name} mounts {source}, which does not exist"
        build = service.get("build")
        if build:
            context = repo / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} missing"
            if isinstance(build, dict) and build.get("dockerfile"):
                dockerfile = context / build["dockerfile"]
                assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def check_env_example(text: str, compose: dict[str, Any]) -> None:
    """deploy/.env.example names every value compose requires, and holds no secret."""
    assigned = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))
    missing = required_variables(compose) - set(assigned)
    assert not missing, f"deploy/.env.example lacks {sorted(missing)}"
    for variable in USERS.values():
        assert variable in assigned and variable + "_PLAIN" in assigned, variable
    filled = {
        k
        for k, v in assigned.items()
        if v and ("PASSWORD" in k or k in required_variables(compose))
    }
    assert not filled, f"the example must not carry secrets: {sorted(filled)}"


def check_init_script(text: str) -> None:
    """One role and database per service, each owned by its role; PUBLIC loses CONNECT."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    calls = dict(re.findall(r"^twoline_create_service_database (\w+) (\w+)$", code, re.M))
    assert calls == {e.database: f"{e.database.upper()}_DB_PASSWORD" for e in EXPECTED}, calls
    assert re.search(r"CREATE ROLE %I LOGIN", code), "no CREATE ROLE ... LOGIN"
    assert re.search(r"CREATE DATABASE %I OWNER %I", code), "databases are not owned by their role"
    assert re.search(r'REVOKE (ALL|CONNECT) ON DATABASE :"name" FROM PUBLIC', code), (
        "CONNECT is not revoked from PUBLIC"
    )
    assert "PASSWORD :'password'" in code, "passwords are not passed as psql variables"


def check_dockerfile(text: str) -> None:
    instructions = [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]
    instructions = [line for line in instructions if not line.startswith("#")]
    froms = [line for line in instructions if line.upper().startswith("FROM ")]
    assert froms, "no FROM"
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), f.split()[1]) for f in froms]
    assert all(i.startswith("python:3.11-slim") for i in images), images
    runs = " ".join(line for line in instructions if line.startswith("RUN "))
    assert re.search(r"pip install [^&;]*\buv\b", runs), "uv is not installed from PyPI with pip"
    assert re.search(r"uv sync [^&;]*--frozen", runs), "no `uv sync --frozen`"
    assert re.search(r"uv sync [^&;]*--no-dev", runs), "the image would carry the dev tools"
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"runs as {users or 'root'}"
    health = [line for line in instructions if line.startswith("HEALTHCHECK ")]
    assert health and "python" in health[-1] and "urllib" in health[-1], health
    copies = [line for line in instructions if line.startswith("COPY ") and "--from" not in line]
    assert not [c for c in copies if re.match(r"COPY \.\s", c + " ")], (
        "COPY . would bake .twoline/ (passwords, issuer key) and .venv/ into the image"
    )


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def test_postgres_has_an_init_script_a_volume_and_a_healthcheck(compose: dict[str, Any]) -> None:
    check_postgres(compose)


def test_nats_uses_the_project_config_and_keeps_jetstream_on_a_volume(
    compose: dict[str, Any],
) -> None:
    check_nats(compose)


def test_provisioning_runs_once_nats_is_healthy(compose: dict[str, Any]) -> None:
    check_provision(compose)


def test_every_service_is_present_healthchecked_and_waits_for_its_dependencies(
    compose: dict[str, Any],
) -> None:
    check_services(compose)


def test_one_image_built_once_for_every_twoline_process(compose: dict[str, Any]) -> None:
    check_image(compose)


def test_each_service_has_its_own_database_and_role(compose: dict[str, Any]) -> None:
    check_databases(compose)


def test_no_container_receives_another_services_secrets(compose: dict[str, Any]) -> None:
    check_secret_isolation(compose)


def test_zone_networks_keep_zone_b_and_oversight_away_from_zone_a(compose: dict[str, Any]) -> None:
    check_networks(compose)


def test_traces_go_through_the_collector_to_jaeger(compose: dict[str, Any]) -> None:
    check_telemetry(compose, yaml.safe_load(COLLECTOR.read_text()))


def test_every_file_compose_mounts_exists(compose: dict[str, Any]) -> None:
    check_mounts_exist(compose, REPO)


def test_env_example_names_every_required_value_and_holds_no_secret(
    compose: dict[str, Any],
) -> None:
    check_env_example(ENV_EXAMPLE.read_text(), compose)


def test_init_script_creates_a_database_and_role_per_service() -> None:
    check_init_script(INIT_SCRIPT.read_text())
    assert os.access(INIT_SCRIPT, os.X_OK), "init.sh should be executable (else it is sourced)"


def test_dockerfile_installs_the_locked_workspace_as_a_non_root_user() -> None:
    check_dockerfile(DOCKERFILE.read_text())


def test_nats_config_users_match_the_compose_variables() -> None:
    """Every user in nats-server.conf reads the variable compose (and USERS) give its hash in."""
    conf = NATS_CONF.read_text()
    users = dict(re.findall(r"user: ([\w-]+), password: \$(\w+)", conf))
    assert users == USERS


# ---------------------------------------------------------------- negative: the checks can fail


def _set_env(service: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["services"][service]["environment"][key] = value

    return mutate


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        node = c
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def _case_resolution_on_zone_a(c: dict[str, Any]) -> None:
    c["services"]["case-resolution"]["networks"].append("zone-a")


def _mount_missing_file(c: dict[str, Any]) -> None:
    c["services"]["nats"]["volumes"].append("./deploy/nats/missing.conf:/etc/nats/x.conf:ro")


def _env_file_for_audit(c: dict[str, Any]) -> None:
    c["services"]["audit"]["env_file"] = ["deploy/.env"]


def _nats_condition_started(c: dict[str, Any]) -> None:
    c["services"]["consent"]["depends_on"]["nats"]["condition"] = "service_started"


def _otel_elsewhere(c: dict[str, Any]) -> None:
    c["services"]["intake"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://jaeger:4318"


def _nats_config_writable(c: dict[str, Any]) -> None:
    volumes = c["services"]["nats"]["volumes"]
    volumes[:] = [v.removesuffix(":ro") if "nats-server.conf" in v else v for v in volumes]


def _intake_builds_too(c: dict[str, Any]) -> None:
    c["services"]["intake"]["build"] = {"context": ".", "dockerfile": "deploy/Dockerfile"}


def _consent_may_pull(c: dict[str, Any]) -> None:
    del c["services"]["consent"]["pull_policy"]


BROKEN_COMPOSE = {
    "case-resolution on the intake database": (
        _set_env(
            "case-resolution",
            "TWOLINE_CASE_RESOLUTION_DATABASE_URL",
            "postgresql://intake:${INTAKE_DB_PASSWORD}@postgres:5432/intake",
        ),
        check_databases,
    ),
    "referral borrowing consent's role": (
        _set_env(
            "referral",
            "TWOLINE_REFERRAL_DATABASE_URL",
            "postgresql://consent:${REFERRAL_DB_PASSWORD}@postgres:5432/referral",
        ),
        check_databases,
    ),
    "zone B given the intake NATS password": (
        _set_env("case-resolution", "LEAK", "${NATS_INTAKE_PASSWORD_PLAIN}"),
        check_secret_isolation,
    ),
    "env_file hands audit every secret": (_env_file_for_audit, check_secret_isolation),
    "zone B on the zone-A network": (_case_resolution_on_zone_a, check_networks),
    "no healthcheck on intake": (_drop(("services", "intake", "healthcheck")), check_services),
    "consent starts before nats is healthy": (_nats_condition_started, check_services),
    "audit missing": (_drop(("services", "audit")), check_services),
    "postgres without its init script": (
        _drop(("services", "postgres", "volumes")),
        check_postgres,
    ),
    "nats config mounted writable": (_nats_config_writable, check_nats),
    "nats without a JetStream volume": (
        _set_env("nats", "NATS_STORE_DIR", '"/tmp/js"'),
        check_nats,
    ),
    "two services building the same image": (_intake_builds_too, check_image),
    "consent pulling a local-only image": (_consent_may_pull, check_image),
    "a mount of a file that does not exist": (
        _mount_missing_file,
        lambda c: check_mounts_exist(c, REPO),
    ),
    "intake exporting traces past the collector": (
        _otel_elsewhere,
        lambda c: check_telemetry(c, yaml.safe_load(COLLECTOR.read_text())),
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_COMPOSE))
def test_each_compose_check_fails_on_a_broken_copy(compose: dict[str, Any], case: str) -> None:
    mutate, check = BROKEN_COMPOSE[case]
    check(compose)  # the real file passes
    broken = copy.deepcopy(compose)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)


BROKEN_TEXT = {
    "init.sh without REVOKE": (
        INIT_SCRIPT,
        lambda t: re.sub(r"REVOKE ALL ON DATABASE[^\n]*\n", "", t),
        check_init_script,
    ),
    "init.sh skipping a service": (
        INIT_SCRIPT,
        lambda t: t.replace("twoline_create_service_database audit AUDIT_DB_PASSWORD\n", ""),
        check_init_script,
    ),
    "Dockerfile without --frozen": (
        DOCKERFILE,
        lambda t: t.replace("--frozen", ""),
        check_dockerfile,
    ),
    "Dockerfile running as root": (
        DOCKERFILE,
        lambda t: re.sub(r"^USER .*$", "USER root", t, flags=re.M),
        check_dockerfile,
    ),
    "Dockerfile copying the whole context": (
        DOCKERFILE,
        lambda t: t.replace("COPY twoline/ twoline/", "COPY . ."),
        check_dockerfile,
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_TEXT))
def test_each_file_check_fails_on_a_broken_copy(case: str) -> None:
    path, mutate, check = BROKEN_TEXT[case]
    text = path.read_text()
    check(text)
    broken = mutate(text)
    assert broken != text, "the mutation changed nothing"
    with pytest.raises(AssertionError):
        check(broken)


def test_env_example_check_fails_on_a_committed_secret(compose: dict[str, Any]) -> None:
    text = ENV_EXAMPLE.read_text()
    with pytest.raises(AssertionError):
        check_env_example(
            text.replace("AUDIT_DB_PASSWORD=\n", "AUDIT_DB_PASSWORD=hunter2\n"), compose
        )
    with pytest.raises(AssertionError):
        check_env_example(text.replace("NATS_AUDIT_PASSWORD=\n", ""), compose)


# ---------------------------------------------------------------- run the parts for real


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _generated_env(tmp_path: Path) -> dict[str, str]:
    """deploy/.env as the README's generator fills it, read the way compose reads it."""
    script = re.search(r"<<'PY'\n(.*?)\nPY\n", DEPLOY_README.read_text(), re.S)
    assert script, "deploy/README.md has no generator block"
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    subprocess.run([sys.executable, "-c", script[1], str(env_file)], check=True, timeout=60)
    values = {}
    for name, raw in re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", env_file.read_text(), re.M):
        # compose .env: single quotes are literal; these files need nothing else
        values[name] = raw[1:-1] if raw.startswith("'") and raw.endswith("'") else raw
    return values


def test_readme_generator_fills_every_secret_with_quoted_bcrypt_hashes(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    import bcrypt

    values = _generated_env(tmp_path)
    empty = {name for name in required_variables(compose) if not values.get(name)}
    assert not empty, f"still empty after the generator: {sorted(empty)}"
    for variable in USERS.values():
        hashed = values[variable]
        assert re.fullmatch(r'"\$2b\$11\$[./A-Za-z0-9]{53}"', hashed), hashed
        assert bcrypt.checkpw(values[variable + "_PLAIN"].encode(), hashed.strip('"').encode())
    for name, value in values.items():
        if name.endswith(("_PLAIN", "_DB_PASSWORD")):
            assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", value), f"{name} is not URL-safe"


def _nats_binary() -> str | None:
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")


@pytest.mark.nats
@pytest.mark.skipif(_nats_binary() is None, reason="no nats-server binary")
def test_nats_starts_with_the_compose_command_and_generated_secrets(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    """The compose nats service, run with the project's nats-server: healthy, and provisionable."""
    from twoline.natsserver import provision_url

    values = _generated_env(tmp_path)
    nats = compose["services"]["nats"]
    client, monitor = _free_port(), _free_port()
    replace = {
        "/etc/nats/nats-server.conf": str(NATS_CONF),
        "0.0.0.0": "127.0.0.1",
        "4222": str(client),
        "8222": str(monitor),
    }
    argv = [_nats_binary(), *(replace.get(a, a) for a in nats["command"])]
    env = {}
    for key, value in environment(nats).items():
        env[key] = VARIABLE.sub(lambda m: values[m[1]], value)
    env["NATS_STORE_DIR"] = f'"{tmp_path / "data"}"'
    log = (tmp_path / "nats.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = nats["healthcheck"]["test"][-1].replace(":8222/", f":{monitor}/")
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, (tmp_path / "nats.log").read_text()
            try:
                with urllib.request.urlopen(health, timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "nats never became healthy"
                time.sleep(0.1)
        passwords = {user: values[USERS[user] + "_PLAIN"] for user in ADMINS.values()}
        asyncio.run(provision_url(f"nats://127.0.0.1:{client}", passwords))
    finally:
        process.terminate()
        process.wait(timeout=10)


def _postgres_bindir() -> Path | None:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates = [Path(out.stdout.strip())] if out.returncode == 0 else []
    except OSError:
        candidates = []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


@dataclass
class PrivatePostgres:
    """A throwaway cluster set up like the postgres image's: local trust, passwords over TCP."""

    directory: Path  # the Unix socket and a copy of init.sh live here
    port: int
    run_as: list[str]  # prefix that runs a command as the cluster's owner

    def run(self, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(
            [*self.run_as, *argv], cwd=self.directory, text=True, check=False, **kwargs
        )


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bindir = _postgres_bindir()
    if bindir is None or not shutil.which("psql"):
        pytest.skip("no initdb/pg_ctl/psql on this machine")
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user for initdb")
        run_as = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
    # In /tmp, short: a Unix socket path is capped at about 100 characters.
    directory = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    directory.chmod(0o777)
    cluster = PrivatePostgres(directory, _free_port(), run_as)
    data = str(directory / "data")
    initdb = cluster.run(
        str(bindir / "initdb"),
        "-D",
        data,
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
    )
    assert initdb.returncode == 0, initdb.stderr
    options = f"-k {directory} -p {cluster.port} -c listen_addresses=127.0.0.1"
    log = str(directory / "log")
    started = cluster.run(
        str(bindir / "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "start"
    )
    assert started.returncode == 0, started.stderr
    try:
        yield cluster
    finally:
        cluster.run(str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)


def test_init_script_isolates_the_service_databases(private_postgres: PrivatePostgres) -> None:
    """Run init.sh as the postgres image would; then every role reaches only its own database."""
    import psycopg

    cluster = private_postgres
    script = cluster.directory / "init.sh"  # a copy the cluster's owner can surely read
    shutil.copy(INIT_SCRIPT, script)
    script.chmod(0o755)
    passwords = {e.database: f"pw-{e.database}-{os.getpid()}" for e in EXPECTED}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGHOST": str(cluster.directory),
        "PGPORT": str(cluster.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        **{f"{db.upper()}_DB_PASSWORD": pw for db, pw in passwords.items()},
    }
    for _ in range(2):  # a second run (e.g. by hand) must succeed too
        result = cluster.run(str(script), env=env)
        assert result.returncode == 0, result.stderr

    def connect(role: str, database: str, password: str) -> Any:
        return psycopg.connect(
            host="127.0.0.1",
            port=cluster.port,
            user=role,
            password=password,
            dbname=database,
            connect_timeout=5,
        )

    for role, password in passwords.items():
        with connect(role, role, password) as conn:
            conn.execute("CREATE TABLE probe (x int)")  # migrations need to create tables
            conn.execute("DROP TABLE probe")
        for other in [*passwords, "postgres", "template1"]:
            if other == role:
                continue
            with pytest.raises(psycopg.OperationalError, match=r"CONNECT privilege"):
                connect(role, other, password).close()
        with pytest.raises(psycopg.OperationalError, match=r"password authentication failed"):
            connect(role, role, password + "x").close()

    result = cluster.run(str(script), env={**env, "AUDIT_DB_PASSWORD": ""})
    assert result.returncode != 0
    assert "AUDIT_DB_PASSWORD" in result.stderr
