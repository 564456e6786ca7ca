"""Render a kustomization the way ``kubectl kustomize`` does, for the few features manifests/kubernetes uses.

Supported: ``resources`` (YAML files, and directories holding a kustomization.yaml) and ``patches`` given inline as
JSON 6902 operations (add, remove, replace, test) with a ``target`` of kind and name. Anything else in a
kustomization fails loudly rather than being ignored, so the manifests cannot quietly outgrow this renderer;
tests/test_manifests.py also compares its output with ``kubectl kustomize`` where kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
_KNOWN = {"apiVersion", "kind", "resources", "patches"}


def render(directory: Path) -> list[Resource]:
    """The resources the kustomization in ``directory`` produces, patches applied."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KNOWN
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml uses {sorted(unknown)}, which this renderer does not support")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        if set(target) != {"kind", "name"} or set(patch) != {"target", "patch"}:
            raise ValueError(f"unsupported patch form in {directory}: {patch}")
        matches = [r for r in resources if r["kind"] == target["kind"] and r["metadata"]["name"] == target["name"]]
        if len(matches) != 1:
            raise ValueError(f"patch target {target} matches {len(matches)} resources in {directory}")
        index = resources.index(matches[0])
        resources[index] = apply_json_patch(matches[0], yaml.safe_load(patch["patch"]))
    return resources


def apply_json_patch(document: Resource, operations: list[dict[str, Any]]) -> Resource:
    """RFC 6902 add, remove, replace and test on a copy of ``document``."""
    result = copy.deepcopy(document)
    for op in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        container: Any = result
        for part in parents:
            container = container[int(part)] if isinstance(container, list) else container[part]
        kind = op["op"]
        if kind == "test":
            current = container[int(last)] if isinstance(container, list) else container[last]
            if current != op["value"]:
                raise ValueError(f"test failed at {op['path']}: {current!r} != {op['value']!r}")
        elif kind == "remove":
            del container[int(last) if isinstance(container, list) else last]
        elif kind == "add" and isinstance(container, list):
            container.insert(len(container) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif kind in ("add", "replace"):
            if kind == "replace" and not isinstance(container, list) and last not in container:
                raise ValueError(f"replace of a missing member at {op['path']}")
            container[int(last) if isinstance(container, list) else last] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"unsupported JSON patch operation {kind!r}")
    return result
