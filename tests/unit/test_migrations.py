"""Every service's migrations load: names well formed and versions unique. Branches developed side by side
took the same version number three times (refunds 004, returns 004, warehouse 002); the runner refuses that
at a service's start, and this says it before any service starts."""

from __future__ import annotations

import pytest

from apphost.registry import SERVICES, spec_of


@pytest.mark.parametrize("name", SERVICES)
def test_migrations_load_with_unique_versions(name: str) -> None:
    spec = spec_of(name)
    migrations = spec.migrations()
    versions = [(m.track, m.version) for m in migrations]
    assert len(versions) == len(set(versions))
    assert [m.version for m in migrations if m.track == spec.schema] == sorted(
        m.version for m in migrations if m.track == spec.schema
    )
