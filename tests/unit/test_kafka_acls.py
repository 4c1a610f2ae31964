"""The Kafka ACLs shipped in deploy/ (generated from contracts/catalog.py) let each service write exactly the
topics it produces and the dead-letter topics of what it consumes, read exactly what it consumes, and join only
its own consumer groups. Checked by evaluating the ACLs as Kafka's authorizer does (allow rules, literal or
prefix match, Read/Write/Delete/Alter imply Describe), on the Strimzi KafkaUsers and on the compose setup script."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from apphost import deploygen
from apphost.registry import DEPLOYED as SERVICES
from apphost.registry import spec_of
from contracts.catalog import CATALOG, all_topic_names, dlq_topic

ROOT = Path(__file__).resolve().parents[2]
EVERY_TOPIC = [n for n, _ in all_topic_names(with_dlq=True)]
IMPLIES_DESCRIBE = {"Read", "Write", "Delete", "Alter"}

Rule = tuple[str, str, str, frozenset[str]]  # resource type, name, pattern, operations


def allowed(rules: list[Rule], operation: str, resource: str, name: str) -> bool:
    for rtype, rname, pattern, ops in rules:
        if rtype != resource:
            continue
        if not (name == rname if pattern == "literal" else name.startswith(rname)):
            continue
        if operation in ops or "All" in ops or (operation == "Describe" and ops & IMPLIES_DESCRIBE):
            return True
    return False


def from_kafka_users() -> dict[str, list[Rule]]:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "kafka-users.yaml").read_text()) if d]
    out: dict[str, list[Rule]] = {}
    for doc in docs:
        rules = out.setdefault(doc["metadata"]["name"], [])
        for acl in doc["spec"]["authorization"]["acls"]:
            assert acl.get("type", "allow") == "allow" and acl["host"] == "*"
            r = acl["resource"]
            rules.append(
                (
                    r["type"],
                    r.get("name", "kafka-cluster"),
                    r.get("patternType", "literal"),
                    frozenset(acl["operations"]),
                )
            )
    return out


def from_setup_script() -> dict[str, list[Rule]]:
    out: dict[str, list[Rule]] = {}
    for line in (ROOT / "deploy" / "kafka" / "setup-users.sh").read_text().splitlines():
        if line.startswith("user "):  # a user may have no ACL at all (the workbench)
            out.setdefault(shlex.split(line)[1], [])
        if not line.startswith("acl "):
            continue
        words = shlex.split(line)
        user, rest = words[1], words[2:]
        ops, target = rest[: rest.index("--")], rest[rest.index("--") + 1 :]
        if target == ["--cluster"]:
            rule: Rule = ("cluster", "kafka-cluster", "literal", frozenset(ops))
        else:
            assert target[0] in ("--topic", "--group") and target[2] == "--resource-pattern-type"
            rule = (target[0].removeprefix("--"), target[1], target[3], frozenset(ops))
        out.setdefault(user, []).append(rule)
    return out


SOURCES = {"k8s KafkaUser": from_kafka_users, "compose kafka-setup": from_setup_script}


def produced(service: str) -> set[str]:
    return {t.name for t in CATALOG if t.producer == service}


def consumed(service: str) -> set[str]:
    return {t.name for t in CATALOG if service in t.consumers}


def groups_of(service: str) -> set[str]:
    return {f"{service}.{c.name}" for c in spec_of(service).consumers}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("service", SERVICES)
def test_a_service_writes_what_it_produces_and_reads_what_it_consumes(source: str, service: str) -> None:
    rules = SOURCES[source]()[deploygen.kafka_user(service)]
    may_write = {t for t in EVERY_TOPIC if allowed(rules, "Write", "topic", t)}
    may_read = {t for t in EVERY_TOPIC if allowed(rules, "Read", "topic", t)}
    assert may_write == produced(service) | {dlq_topic(t) for t in consumed(service)}
    assert may_read == consumed(service)
    assert all(allowed(rules, "Describe", "topic", t) for t in may_write | may_read)
    # Its consumer groups (as the runtime names them: <service>.<consumer>), and no other service's.
    # (the workbench consumes nothing: no group)
    assert bool(groups_of(service)) == bool(consumed(service))
    assert all(allowed(rules, "Read", "group", g) for g in groups_of(service))
    for other in SERVICES:
        if other != service:
            assert not any(allowed(rules, "Read", "group", g) for g in groups_of(other))
    assert not allowed(rules, "Create", "topic", "returns.requested")
    assert not any(allowed(rules, op, "cluster", "kafka-cluster") for op in ("Alter", "Create", "ClusterAction"))


def test_no_service_may_write_a_command_topic_or_another_services_events() -> None:
    users = from_kafka_users()
    for service in SERVICES:
        rules = users[deploygen.kafka_user(service)]
        for t in CATALOG:
            if t.producer != service:
                assert not allowed(rules, "Write", "topic", t.name), (service, t.name)


@pytest.mark.parametrize("source", SOURCES)
def test_the_ops_user_reads_everything_and_writes_commands_and_replays(source: str) -> None:
    rules = SOURCES[source]()[deploygen.kafka_user("ops")]
    assert all(allowed(rules, "Read", "topic", t) and allowed(rules, "Create", "topic", t) for t in EVERY_TOPIC)
    commands = {t.name for t in CATALOG if t.producer not in SERVICES}
    assert {"refunds.commands", "inventory.checks"} <= commands
    replayable = {t.name for t in CATALOG if t.consumers}
    assert {t for t in EVERY_TOPIC if allowed(rules, "Write", "topic", t)} == commands | replayable
    assert allowed(rules, "Read", "group", "returnflow.dlq-replay")
    assert all(allowed(rules, "Describe", "group", g) for s in SERVICES for g in groups_of(s))
    assert not any(allowed(rules, "Read", "group", g) for s in SERVICES for g in groups_of(s))


def test_both_deployments_ship_the_same_acls() -> None:
    k8s, compose = from_kafka_users(), from_setup_script()
    assert set(k8s) == set(compose) == {deploygen.kafka_user(w) for w in [*SERVICES, "ops"]}
    for user in k8s:
        assert sorted(k8s[user]) == sorted(compose[user]), user


def test_the_setup_script_creates_each_user_with_its_own_password_file() -> None:
    text = (ROOT / "deploy" / "kafka" / "setup-users.sh").read_text()
    users = re.findall(r"^user (\S+) (\S+)$", text, flags=re.M)
    assert users == [(deploygen.kafka_user(w), w) for w in [*SERVICES, "ops"]]
    for _, env_file in users:
        assert (ROOT / "deploy" / "secrets" / f"{env_file}.env").read_text().count(
            "RETURNFLOW_KAFKA_SASL_PASSWORD="
        ) == 1
