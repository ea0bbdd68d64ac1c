"""The deployment files agree with the code they deploy.

docker-compose.yml, Dockerfile, .dockerignore, .env.example and the README's
configuration table are parsed and checked against `api.core.settings.Settings`,
so a renamed or new setting, a missing healthcheck or a stale default fails
here. No Docker engine and no server is needed.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from api.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
ESSENTIAL_API_ENV = {
    "DATABASE_URL",
    "NEO4J_URI",
    "NEO4J_PASSWORD",
    "API_KEY_PEPPER",
    "ADMIN_API_KEY",
    "BLOB_ENDPOINT_URL",
}
STORES = ("neo4j", "postgres", "minio")
# What the API reads at run time: code, both migration sets, the Alembic config.
RUNTIME_PATHS = (
    "main.py",
    "api",
    "graph",
    "relational",
    "embeddings",
    "migrations",
    "cypher",
    "alembic.ini",
)
SERVE_CMD = ["overwatch", "serve", "--host", "0.0.0.0", "--port", "8000"]

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")
_ENV_LINE = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


# ------------------------------------------------------------------ helpers
def resolve(value: Any) -> str:
    """A compose value as Compose sees it with an empty shell and no `.env`."""
    text = str(value).replace("$$", "\0")
    text = _INTERPOLATION.sub(lambda m: m.group("default") or "", text)
    return text.replace("\0", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): resolve(value) for key, value in raw.items()}


def published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs, from short or long port syntax."""
    pairs = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            pairs.add((int(entry["published"]), int(entry["target"])))
            continue
        parts = resolve(entry).split("/")[0].split(":")
        if len(parts) == 1:
            continue  # container port only: Docker picks a random host port
        pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(args: str) -> list[str]:
    """`["a", "b"]` as a list; shell form split on whitespace."""
    args = re.sub(r"^(--\S+\s+)+", "", args)  # HEALTHCHECK --interval=... CMD ...
    if args.startswith("CMD "):
        args = args[4:].strip()
    if args.startswith("["):
        return [str(part) for part in json.loads(args)]
    return args.split()


def env_example() -> list[tuple[int, re.Match[str]]]:
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    return [(i, m) for i, line in enumerate(lines) if (m := _ENV_LINE.match(line.strip()))]


def readme_configuration_rows() -> dict[str, str]:
    """variable -> default cell of the table in the README's Configuration section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Configuration\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "README.md has no '## Configuration' section"
    rows: dict[str, str] = {}
    for line in section.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and (m := re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cells[0])):
            assert m.group(1) not in rows, f"{m.group(1)} listed twice in the README"
            rows[m.group(1)] = cells[1]
    return rows


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting leaks in from the shell running the tests."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.fixture
def dev_env(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment that chooses development, so the default secrets load."""
    clean_env.setenv("ENVIRONMENT", "development")
    return clean_env


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return compose["services"]


@pytest.fixture(scope="module")
def api_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return environment(services["api"])


# ------------------------------------------------------------------ compose
def test_compose_runs_the_stores_and_the_api(services):
    assert {"neo4j", "postgres", "minio", "api"} <= set(services)


def test_neo4j_is_5_26_community_with_browser_and_bolt_published(services):
    neo4j = services["neo4j"]
    assert neo4j["image"] == "neo4j:5.26-community"
    assert {(7474, 7474), (7687, 7687)} <= published_ports(neo4j)
    assert any(str(v).rstrip("/").endswith("/data") for v in neo4j.get("volumes", []))


def test_postgres_is_16_with_the_overwatch_database(services):
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    env = environment(postgres)
    assert (env["POSTGRES_DB"], env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == (
        "overwatch",
        "overwatch",
        "overwatch",
    )
    assert postgres.get("volumes"), "postgres data must outlive the container"


def test_every_service_has_a_healthcheck(services):
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_healthchecks_probe_what_dependents_need(services):
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    neo4j_check = str(services["neo4j"]["healthcheck"]["test"])
    assert "cypher-shell" in neo4j_check or "7474" in neo4j_check
    assert "/healthz" in str(services["api"]["healthcheck"]["test"])


def test_api_waits_for_every_store_to_be_healthy(services):
    depends = services["api"].get("depends_on")
    assert isinstance(depends, dict), "depends_on needs the long form to carry conditions"
    for store in STORES:
        assert depends.get(store, {}).get("condition") == "service_healthy", store


def test_api_is_built_from_the_dockerfile_and_published_on_8000(services):
    api = services["api"]
    build = api["build"]
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    assert (ROOT / dockerfile).is_file()
    assert (8000, 8000) in published_ports(api)


def test_compose_publishes_only_on_loopback_unless_the_user_opts_in(services):
    # The API runs with the default admin key here: reachable from the network
    # only when the user says so (API_BIND), never by default.
    for name, service in services.items():
        for entry in service.get("ports") or []:
            assert isinstance(entry, str), f"{name}: use the short port syntax with a host IP"
            host_ip = resolve(entry).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {entry} beyond loopback"
    assert "${API_BIND:-127.0.0.1}:8000:8000" in services["api"]["ports"]


def test_compose_chooses_development_explicitly(services):
    raw = services["api"]["environment"]
    assert "ENVIRONMENT" in raw, "compose must say which environment it runs"
    assert resolve(raw["ENVIRONMENT"]) == "development"


def test_api_environment_names_are_settings_fields(api_env):
    unknown = set(api_env) - SETTINGS_ENV
    assert not unknown, f"not a Settings field (typo?): {sorted(unknown)}"
    missing = ESSENTIAL_API_ENV - set(api_env)
    assert not missing, f"api service must set {sorted(missing)}"


def test_api_environment_is_a_valid_development_configuration(api_env, clean_env):
    for name, value in api_env.items():
        clean_env.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment == "development"
    assert settings.db_auto_migrate is True  # a fresh `docker compose up` must migrate


def test_api_reaches_the_stores_by_service_name_with_their_credentials(services, api_env):
    db = make_url(api_env["DATABASE_URL"])
    postgres = environment(services["postgres"])
    assert db.drivername == "postgresql+asyncpg"
    assert (db.host, db.port or 5432) == ("postgres", 5432)
    assert (db.username, db.password, db.database) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )

    assert api_env["NEO4J_URI"] == "bolt://neo4j:7687"
    user, _, password = environment(services["neo4j"])["NEO4J_AUTH"].partition("/")
    assert (api_env.get("NEO4J_USER", "neo4j"), api_env["NEO4J_PASSWORD"]) == (user, password)

    blob = urlsplit(api_env["BLOB_ENDPOINT_URL"])
    assert (blob.hostname, blob.port) == ("minio", 9000)
    minio = environment(services["minio"])
    assert api_env["BLOB_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert api_env["BLOB_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_presigned_urls_point_at_a_port_published_by_minio(services, api_env):
    public = urlsplit(api_env["BLOB_PUBLIC_ENDPOINT_URL"])
    assert public.hostname in ("localhost", "127.0.0.1")
    assert (public.port, 9000) in published_ports(services["minio"])


def test_neo4j_password_is_shared_by_server_and_api_when_overridden(services):
    # One variable drives both, so setting it in .env cannot split them.
    auth = str(services["neo4j"]["environment"]["NEO4J_AUTH"])
    api_password = str(services["api"]["environment"]["NEO4J_PASSWORD"])
    assert "${NEO4J_PASSWORD" in auth and "${NEO4J_PASSWORD" in api_password


# --------------------------------------------------------------- Dockerfile
def test_dockerfile_is_multi_stage_and_runs_as_non_root():
    instructions = dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2, "builder and runtime stages expected"
    assert froms[-1].split()[0] == "python:3.11-slim"
    users = [args for keyword, args in final_stage(instructions) if keyword == "USER"]
    assert users, "the runtime stage must switch to a service user"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_sets_no_environment_so_an_image_is_production():
    for keyword, args in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"(^|\s)ENVIRONMENT[=\s]", args), f"{keyword} {args}"


def test_without_environment_the_default_secrets_are_refused(clean_env):
    # No variable and no .env: production, which refuses to start on defaults.
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]
    message = str(refused.value)
    assert "ENVIRONMENT=production" in message
    for name in ("API_KEY_PEPPER", "ADMIN_API_KEY", "NEO4J_PASSWORD", "BLOB_SECRET_ACCESS_KEY"):
        assert name in message


def test_make_run_and_migrate_choose_development_explicitly():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    commands = re.findall(r"^\t(.*\boverwatch (?:migrate|serve)\b.*)$", makefile, re.M)
    assert commands, "make run/migrate no longer call overwatch?"
    for command in commands:
        assert "ENVIRONMENT=development" in command, command


def test_dockerfile_serves_the_api_on_8000_with_a_healthcheck():
    stage = final_stage(dockerfile_instructions())
    exposed = {port for keyword, args in stage if keyword == "EXPOSE" for port in args.split()}
    assert "8000" in exposed or "8000/tcp" in exposed
    healthchecks = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert healthchecks and "/healthz" in healthchecks[-1]
    commands = [args for keyword, args in stage if keyword == "CMD"]
    assert commands and exec_form(commands[-1]) == SERVE_CMD


def test_dockerfile_ships_every_file_the_service_reads():
    stage = final_stage(dockerfile_instructions())
    copied: set[str] = set()
    for keyword, args in stage:
        if keyword == "COPY" and "--from=" not in args:
            sources = [part for part in args.split() if not part.startswith("--")][:-1]
            copied.update(source.rstrip("/") for source in sources)
    for path in RUNTIME_PATHS:
        assert (ROOT / path).exists(), f"{path} is missing from the repository"
        assert path in copied, f"the runtime stage does not COPY {path}"


def test_dockerignore_keeps_local_state_out_and_sources_in():
    patterns = [
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    excluded = [p for p in patterns if not p.startswith("!")]
    for needed_out in (".venv", ".local", ".env", ".git"):
        assert needed_out in excluded, f".dockerignore must exclude {needed_out}"
    # The builder needs pyproject.toml and README.md (the package's readme).
    for path in (*RUNTIME_PATHS, "pyproject.toml", "README.md"):
        hits = [p for p in excluded if fnmatch.fnmatch(path, p)]
        assert not hits, f"{path} is excluded by {hits}"


# -------------------------------------------------------------- .env.example
def test_env_example_lists_every_setting_and_nothing_else():
    names = [m.group("name") for _, m in env_example()]
    assert len(names) == len(set(names)), "a variable is listed twice"
    assert set(names) - SETTINGS_ENV == set(), "unknown variables in .env.example"
    assert SETTINGS_ENV - set(names) == set(), "Settings fields missing from .env.example"


def test_env_example_explains_every_variable():
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    for index, match in env_example():
        above = lines[index - 1].strip() if index else ""
        assert above.startswith("#") and not _ENV_LINE.match(above), (
            f"{match.group('name')} needs a comment line above it"
        )


def test_env_example_commented_out_examples_are_valid(dev_env):
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for index, match in env_example():
        if not match.group("commented"):
            continue
        name = match.group("name")
        dev_env.setenv(name, match.group("value"))
        example = Settings(_env_file=None)  # type: ignore[call-arg]
        dev_env.delenv(name)
        if "default" in lines[index - 1]:
            field = name.lower()
            assert getattr(example, field) == getattr(defaults, field), f"{name} example"


def test_env_example_values_are_the_local_stack_defaults(clean_env):
    from_example = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    # The one value .env.example does not share with the code: it chooses development.
    assert from_example.environment == "development"
    clean_env.setenv("ENVIRONMENT", "development")
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_example.model_dump() == defaults.model_dump()
    db = make_url(from_example.database_url)
    assert (db.host, db.port, db.username, db.database) == (
        "127.0.0.1",
        55432,
        "overwatch",
        "overwatch",
    )
    assert from_example.neo4j_uri.endswith(":7687")
    assert from_example.neo4j_password.get_secret_value() == "overwatch-dev-password"
    assert from_example.blob_endpoint_url == "http://127.0.0.1:9000"


# ------------------------------------------------------------------- README
def test_readme_configuration_table_lists_every_setting():
    rows = readme_configuration_rows()
    assert set(rows) - SETTINGS_ENV == set(), "README lists variables Settings does not read"
    assert SETTINGS_ENV - set(rows) == set(), "README's configuration table misses settings"


def test_readme_defaults_match_settings(dev_env):
    # Each documented default, fed back as the variable, must give the real default.
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    rows = readme_configuration_rows()
    # ENVIRONMENT's default (production) refuses the default secrets: compare it as text.
    assert rows.pop("ENVIRONMENT") == f"`{Settings.model_fields['environment'].default}`"
    for name, cell in rows.items():
        field = name.lower()
        if cell == "*(unset)*":
            assert getattr(defaults, field) is None, f"README says {name} has no default"
            continue
        dev_env.setenv(name, "" if cell == "*(empty)*" else cell.strip("`"))
        documented = Settings(_env_file=None)  # type: ignore[call-arg]
        dev_env.delenv(name)
        assert getattr(documented, field) == getattr(defaults, field), f"README default of {name}"
