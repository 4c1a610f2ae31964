"""Each service, configured exactly as deploy/ configures it (the placeholders included), would start: its
settings are read as its container would read them — compose: the service's `environment` and its env file;
Kubernetes: the ConfigMap as environment, the container's `env`, and the files of its projected secrets volume
in RETURNFLOW_SECRETS_DIR — in an environment with nothing else, and then pass every check a start makes before
it opens a connection: endpoints and Kafka credentials (require_endpoints), no development secret
(refuse_development_secrets), and the service's own context (the refunds gateway, the SMS provider, devices,
tokens...), built by the service's own start code. A setting missing from deploy/ fails here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from apphost import deploygen
from apphost.registry import DEPLOYED as SERVICES
from apphost.registry import spec_of
from returnflow.service import require_endpoints
from returnflow.settings import ServiceSettings, Settings, refuse_development_secrets
from returnflow.shops import Shops
from services.workbench import dev as workbench_dev

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Webhook sources each service verifies (routes under /v1/webhooks/<source>/...).
UPSTREAMS = ("returns", "warehouse", "refunds", "notify", "audit")  # what the workbench calls
WEBHOOK_SOURCES = {"returns": {"generic", "shopify"}, "warehouse": {"carriers"}, "notify": {"sms"}}


def read_env_file(path: Path) -> dict[str, str]:
    """docker compose's env-file format as deploy/secrets uses it: KEY=VALUE lines, # comments."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default (deploy/secrets, the placeholders)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def compose_view(service: str) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, secret files) of the service's container under docker compose."""
    svc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"][service]
    env = {k: str(v) for k, v in svc.get("environment", {}).items()}
    for entry in svc.get("env_file", []):
        path = DEPLOY / interpolate(entry["path"] if isinstance(entry, dict) else entry)
        env |= read_env_file(path)
    return env, {}


def k8s_view(service: str) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, files under RETURNFLOW_SECRETS_DIR) of the service's container on Kubernetes. Files from
    Secrets the cluster writes (the KafkaUser's password, the cluster CA) get a stand-in value."""
    docs = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"returnflow-{service}"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        env |= config_maps[ref["configMapRef"]["name"]]["data"]
    env |= {e["name"]: e["value"] for e in container.get("env", [])}
    files: dict[str, str] = {}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["RETURNFLOW_SECRETS_DIR"]]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    for source in volume["projected"]["sources"]:
        name = source["secret"]["name"]
        if name in secrets:  # ours, in deploy/k8s
            data = secrets[name]["stringData"]
            files |= (
                {i["path"]: data[i["key"]] for i in source["secret"]["items"]} if "items" in source["secret"] else data
            )
        else:  # written by Strimzi's operators in the cluster
            files |= {i["path"]: f"written-by-strimzi-{i['key']}" for i in source["secret"]["items"]}
    return env, files


VIEWS = {"compose": compose_view, "k8s": k8s_view}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    import os

    for key in list(os.environ):
        if key.startswith("RETURNFLOW_"):
            monkeypatch.delenv(key)
    yield monkeypatch


def load_as_container(
    service: str, env: dict[str, str], files: dict[str, str], tmp: Path, mp: pytest.MonkeyPatch
) -> tuple[Settings, ServiceSettings]:
    secrets_dir = env.get("RETURNFLOW_SECRETS_DIR")
    if files:
        assert secrets_dir, "secret files are mounted but RETURNFLOW_SECRETS_DIR is not set"
        for name, value in files.items():
            (tmp / name).write_text(value)
    for key, value in env.items():
        mp.setenv(key, value.replace(secrets_dir, str(tmp)) if secrets_dir else value)
    return Settings.load(), spec_of(service).settings.load()


def check_would_start(service: str, settings: Settings, own: ServiceSettings) -> None:
    """What a start checks before it connects anywhere; raises like the start would."""
    assert not settings.dev_stack
    refuse_development_secrets(settings, own)
    require_endpoints(settings)  # database URL, Kafka bootstrap, Kafka credentials
    assert settings.kafka_security_protocol != "PLAINTEXT", "Kafka without authentication"
    assert settings.kafka_sasl_username == deploygen.kafka_user(service), "not the service's own Kafka user"
    for source in WEBHOOK_SOURCES.get(service, ()):
        assert settings.secrets_for(source), f"no webhook secret for {source}"
    if service == "warehouse":
        assert own.devices, "RETURNFLOW_WAREHOUSE_DEVICES: no scanner may post receipts"  # type: ignore[attr-defined]
    if service == "audit":
        assert own.tokens, "RETURNFLOW_AUDIT_TOKENS: nobody may post checks"  # type: ignore[attr-defined]
    if service == "notify":
        assert own.provider != "file", "RETURNFLOW_NOTIFY_PROVIDER=file sends no SMS"  # type: ignore[attr-defined]
    if service == "workbench":
        assert own.read_token, "RETURNFLOW_WORKBENCH_READ_TOKEN: the queue and the pages read nothing"  # type: ignore[attr-defined]
        for name in UPSTREAMS:  # the services it calls, never its own container's loopback (the defaults)
            url = str(getattr(own, f"{name}_url"))
            assert "127.0.0.1" not in url and "localhost" not in url, f"RETURNFLOW_WORKBENCH_{name.upper()}_URL"
    spec = spec_of(service)
    if spec.context is None:
        return
    build, close = spec.context, spec.close

    async def build_context() -> None:  # the service's own start code, on a runtime without connections
        shops = Shops.load(settings.shops_file)
        runtime = SimpleNamespace(pool=None, dsn="postgresql://unused/", settings=settings, spec=spec, shops=shops)
        context = await build(runtime, own)  # type: ignore[arg-type]
        if close is not None:
            await close(context)

    asyncio.run(build_context())


@pytest.mark.parametrize("where", VIEWS)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_would_start_from_the_shipped_deploy_configuration(
    service: str, where: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env, files = VIEWS[where](service)
    settings, own = load_as_container(service, env, files, tmp_path, clean_env)
    check_would_start(service, settings, own)


# A setting deploy/ must carry, per service: without it the service would not start (or would start unusable).
NEEDED = [
    ("returns", "RETURNFLOW_DATABASE_URL"),
    ("returns", "RETURNFLOW_WEBHOOK_SECRETS"),
    ("warehouse", "RETURNFLOW_WAREHOUSE_DEVICES"),
    ("refunds", "RETURNFLOW_REFUNDS_GATEWAY_URL"),
    ("refunds", "RETURNFLOW_WEBHOOK_SECRETS"),
    ("notify", "RETURNFLOW_NOTIFY_TWILIO_AUTH_TOKENS"),
    ("notify", "RETURNFLOW_NOTIFY_PROVIDER"),
    ("audit", "RETURNFLOW_AUDIT_TOKENS"),
    ("audit", "RETURNFLOW_KAFKA_SASL_PASSWORD"),
    ("refunds", "RETURNFLOW_KAFKA_SASL_USERNAME"),
    ("workbench", "RETURNFLOW_WORKBENCH_SESSION_KEY"),
    ("workbench", "RETURNFLOW_WORKBENCH_READ_TOKEN"),
    ("workbench", "RETURNFLOW_WORKBENCH_REFUNDS_URL"),
    ("workbench", "RETURNFLOW_DATABASE_URL"),
]


@pytest.mark.parametrize("where", VIEWS)
@pytest.mark.parametrize(("service", "variable"), NEEDED)
def test_the_check_fails_when_a_needed_setting_is_missing(
    service: str, variable: str, where: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env, files = VIEWS[where](service)
    assert variable in env or variable in files, f"{variable} is not in deploy/ ({where})"
    env.pop(variable, None)
    files.pop(variable, None)
    with pytest.raises((SystemExit, AssertionError, RuntimeError, ValueError)):
        settings, own = load_as_container(service, env, files, tmp_path, clean_env)
        check_would_start(service, settings, own)


def test_a_development_secret_in_deploy_would_be_refused(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env, files = k8s_view("refunds")
    files["RETURNFLOW_REFUNDS_GATEWAY_API_KEY"] = "dev-gateway-api-key"
    settings, own = load_as_container("refunds", env, files, tmp_path, clean_env)
    with pytest.raises(SystemExit, match="RETURNFLOW_REFUNDS_GATEWAY_API_KEY"):
        check_would_start("refunds", settings, own)


@pytest.mark.parametrize("where", VIEWS)
def test_the_workbenchs_development_secrets_would_be_refused(
    where: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env, files = VIEWS[where](service := "workbench")
    env |= workbench_dev.ENV  # what `returnflow up` gives it: a development read token and session key
    files = {k: v for k, v in files.items() if k not in workbench_dev.ENV}
    settings, own = load_as_container(service, env, files, tmp_path, clean_env)
    with pytest.raises(SystemExit, match=r"RETURNFLOW_WORKBENCH_READ_TOKEN.*RETURNFLOW_WORKBENCH_SESSION_KEY"):
        check_would_start(service, settings, own)


@pytest.mark.parametrize("where", VIEWS)
def test_the_workbenchs_read_token_is_an_ops_reader_of_every_service_it_reads(
    where: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env, files = VIEWS[where]("workbench")
    (tmp_path / "wb").mkdir()
    _, own = load_as_container("workbench", env, files, tmp_path / "wb", clean_env)
    token = own.read_token.get_secret_value()  # type: ignore[attr-defined]
    for name in UPSTREAMS:
        (tmp_path / name).mkdir()
        settings, _ = load_as_container(name, *VIEWS[where](name), tmp_path / name, clean_env)
        holders = [r for r in settings.read_tokens.values() if r.token.get_secret_value() == token]
        assert [r.role for r in holders] == ["ops"], name


def test_no_placeholder_in_deploy_is_a_development_secret() -> None:
    texts = [p.read_text() for p in (DEPLOY / "secrets").glob("*.env")] + [(DEPLOY / "k8s" / "config.yaml").read_text()]
    assert len(texts) >= 6
    for text in texts:
        assert not re.search(r"[\"'=\[]dev-", text)
