"""AsyncAPI and OpenAPI documents are committed and match what the code generates."""

from __future__ import annotations

import pytest

from apphost.docs import all_specs, asyncapi_for, generated
from contracts.catalog import CATALOG


def test_committed_docs_match_the_code():
    stale = [str(p) for p, text in generated().items() if not p.exists() or p.read_text() != text]
    assert stale == [], f"run `make docs`: {stale}"


@pytest.mark.parametrize("name", sorted(all_specs()))
def test_asyncapi_matches_the_catalog(name):
    spec = all_specs()[name]
    doc = asyncapi_for(spec)
    receives = {op["channel"]["$ref"].split("/")[-1] for op in doc["operations"].values() if op["action"] == "receive"}
    assert receives == {t for c in spec.consumers for t in c.topics}
    for topic in receives:
        # a service that consumes a topic is listed among that topic's consumers in the catalog
        assert name in next(t for t in CATALOG if t.name == topic).consumers, topic
    for ch in doc["channels"].values():
        ref = ch["messages"].popitem()[1]["$ref"].split("/")[-1]
        assert ref in doc["components"]["messages"]
