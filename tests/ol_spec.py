"""Validating OpenLineage events offline: the official spec's JSON schemas (vendored in
tests/openlineage-spec/) and this project's facet schemas (plugins/wap/lineage_facets/)."""

from __future__ import annotations

import json
from pathlib import Path

from wap.settings import REPO_ROOT

SPEC = Path(__file__).parent / "openlineage-spec"
OWN_FACETS = REPO_ROOT / "plugins" / "wap" / "lineage_facets"


def spec_registry():
    from referencing import Registry, Resource

    resources = []
    for path in [*SPEC.rglob("*.json"), *OWN_FACETS.glob("*.json")]:
        schema = json.loads(path.read_text())
        if "$id" in schema:
            resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def facets_of(event: dict):
    """(where, name, facet) for every facet an event carries."""
    for where, facets in (("run", event["run"].get("facets")), ("job", event["job"].get("facets"))):
        for name, facet in (facets or {}).items():
            yield where, name, facet
    for kind in ("inputs", "outputs"):
        for ds in event.get(kind) or []:
            for group in ("facets", "inputFacets", "outputFacets"):
                for name, facet in (ds.get(group) or {}).items():
                    yield f"{kind}.{group}", name, facet


def validate(event: dict, registry) -> None:
    from jsonschema import Draft202012Validator, FormatChecker

    Draft202012Validator({"$ref": event["schemaURL"]}, registry=registry, format_checker=FormatChecker()).validate(
        event
    )
    for where, name, facet in facets_of(event):
        url = facet["_schemaURL"]
        assert url.split("#")[0] in {uri for uri in registry}, f"{where}.{name}: no schema for {url}"
        Draft202012Validator({"$ref": url}, registry=registry, format_checker=FormatChecker()).validate(facet)
