"""The shipping manifests, checked offline: the MCP registry entry and the Claude Desktop bundle against their
vendored schemas (tests/contracts/README.md names the sources), the Kubernetes kustomizations rendered and
validated against the Kubernetes schemas that kubernetes-validate bundles, and the ties between them all (names,
versions, image, secrets, selectors). The container itself runs in tests/test_docker.py (make test-docker).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kustomize_support import Resource, render
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
CONTRACTS = Path(__file__).resolve().parent / "contracts"
KUSTOMIZATIONS = {"base": MANIFESTS / "kubernetes" / "base", "team": MANIFESTS / "kubernetes" / "overlays" / "team"}
# The oldest Kubernetes minor the manifests promise to fit (autoscaling/v2, policy/v1 and the rest are long GA there)
# and the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]
STATIC_TOOLS = {
    "list_crews",
    "list_inputs",
    "kickoff_crew",
    "get_status",
    "resume_with_feedback",
    "cancel_run",
    "list_executions",
    "list_pending_approvals",
}


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


# ================================================================================ MCP registry entry

SERVER_SCHEMA = CONTRACTS / "server.schema.2025-12-11.json"


def test_server_json_validates_against_the_2025_12_11_registry_schema() -> None:
    schema, server = load(SERVER_SCHEMA), load(MANIFESTS / "server.json")
    assert (
        server["$schema"]
        == schema["$id"]
        == "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
    )
    assert schema_errors(schema, server) == []
    assert len(server["description"]) <= 100


def test_the_vendored_registry_schema_rejects_what_the_registry_rejects() -> None:
    schema, server = load(SERVER_SCHEMA), load(MANIFESTS / "server.json")
    too_long = server | {"description": "x" * 101}
    assert any("is too long" in e for e in schema_errors(schema, too_long))
    latest = json.loads(json.dumps(server))
    latest["packages"][0]["version"] = "latest"
    assert schema_errors(schema, latest)


def test_server_json_offers_the_pypi_package_and_the_container_image_of_this_version() -> None:
    server = load(MANIFESTS / "server.json")
    packages = {p["registryType"]: p for p in server["packages"]}
    assert set(packages) == {"pypi", "oci"}
    assert server["version"] == packages["pypi"]["version"] == project_version()
    assert packages["pypi"]["identifier"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert packages["oci"]["identifier"].endswith(f":{project_version()}")
    for package in packages.values():
        assert package["transport"] == {"type": "stdio"}
        assert package["packageArguments"] == [{"type": "positional", "value": "serve"}]
    # The registry checks ownership: the image's label and the PyPI README must name the server.
    assert f'LABEL io.modelcontextprotocol.server.name="{server["name"]}"' in (ROOT / "Dockerfile").read_text()
    assert f"mcp-name: {server['name']}" in (ROOT / "README.md").read_text()


def test_server_json_environment_variables_are_settings_the_readme_documents() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(CREW_MCP_[A-Z_]+)`", readme))
    for package in load(MANIFESTS / "server.json")["packages"]:
        names = {v["name"] for v in package["environmentVariables"]}
        assert names <= documented, names - documented
        assert {"CREW_MCP_CREW_URL", "CREW_MCP_CREW_TOKEN"} <= names
        secrets = {v["name"] for v in package["environmentVariables"] if v.get("isSecret")}
        assert secrets == {"CREW_MCP_CREW_TOKEN"}


def test_server_json_has_a_streamable_http_remote_for_a_team_deployment() -> None:
    (remote,) = load(MANIFESTS / "server.json")["remotes"]
    assert remote["type"] == "streamable-http"
    assert remote["url"].startswith("https://") and remote["url"].endswith("/mcp")
    placeholders = set(re.findall(r"\{(\w+)\}", remote["url"]))
    assert placeholders == set(remote["variables"]) and all(v["isRequired"] for v in remote["variables"].values())


# ============================================================================ Claude Desktop bundle

BUNDLE = MANIFESTS / "mcpb"
MCPB_SCHEMA = CONTRACTS / "mcpb-manifest-v0.4.schema.json"


def test_bundle_manifest_validates_against_the_mcpb_schema_of_its_version() -> None:
    schema, manifest = load(MCPB_SCHEMA), load(BUNDLE / "manifest.json")
    assert manifest["manifest_version"] == schema["properties"]["manifest_version"]["const"] == "0.4"
    assert schema_errors(schema, manifest) == []
    assert manifest["version"] == project_version()
    assert manifest["server"]["type"] == "uv"


def test_bundle_asks_for_the_crew_url_and_a_secret_token_and_passes_them_as_crew_mcp_settings() -> None:
    manifest = load(BUNDLE / "manifest.json")
    options = manifest["user_config"]
    assert options["crew_token"]["sensitive"] is True
    assert not options["crew_url"].get("sensitive")
    config = manifest["server"]["mcp_config"]
    assert config["env"] == {
        "CREW_MCP_CREW_URL": "${user_config.crew_url}",
        "CREW_MCP_CREW_TOKEN": "${user_config.crew_token}",
    }
    used = set(re.findall(r"\$\{user_config\.(\w+)\}", json.dumps(config)))
    assert used == set(options)
    entry = manifest["server"]["entry_point"]
    assert (BUNDLE / entry).is_file()
    assert config["command"] == "uv" and config["args"][-1] == entry and "${__dirname}" in config["args"]


@pytest.mark.slow
async def test_bundle_entry_point_serves_the_tools_its_manifest_names(tmp_path: Path) -> None:
    manifest = load(BUNDLE / "manifest.json")
    # As a host may start it: the URL left empty (its default), the token field never filled in (no substitution).
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CREW_MCP_LEDGER_URL": "memory://",
        "CREW_MCP_CREW_URL": "",
        "CREW_MCP_CREW_TOKEN": "${user_config.crew_token}",
    }
    params = StdioServerParameters(
        command=sys.executable, args=[str(BUNDLE / manifest["server"]["entry_point"])], env=env
    )
    with anyio.fail_after(60):
        async with Client(stdio_client(params), mode="legacy") as client:
            served = {t.name for t in (await client.list_tools()).tools}
            crews = await client.call_tool("list_crews", {})
    assert {t["name"] for t in manifest["tools"]} == STATIC_TOOLS == {t for t in served if not t.startswith("run_")}
    assert manifest["tools_generated"] is True and any(t.startswith("run_") for t in served)
    assert not crews.is_error and crews.structured_content is not None
    assert crews.structured_content["simulated"] is True


# ====================================================================================== Kubernetes


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Resource]]:
    return request.param, render(KUSTOMIZATIONS[request.param])


def one(resources: list[Resource], kind: str, name: str) -> Resource:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def server_container(resources: list[Resource]) -> dict[str, Any]:
    (container,) = one(resources, "Deployment", "crew-mcp")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_resources_are_valid_kubernetes_objects(rendered: tuple[str, list[Resource]], version: str) -> None:
    _, resources = rendered
    for resource in resources:
        # strict: unknown fields (a typo, a field from a newer release) are errors too
        kubernetes_validate.validate(resource, version, strict=True)
    kinds = {r["kind"] for r in resources}
    assert kinds >= {
        "ServiceAccount", "ConfigMap", "Secret", "Deployment", "Service",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip


def test_the_renderer_agrees_with_kubectl_kustomize(rendered: tuple[str, list[Resource]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the Python rendering is checked by the other tests alone")
    name, resources = rendered
    out = subprocess.run([kubectl, "kustomize", str(KUSTOMIZATIONS[name])], capture_output=True, text=True, check=True)
    theirs = list(yaml.safe_load_all(out.stdout))

    def keyed(rs: list[Resource]) -> dict[tuple[str, str], Resource]:
        return {(r["kind"], r["metadata"]["name"]): r for r in rs}

    assert keyed(resources) == keyed(theirs)


def test_server_pods_run_locked_down_with_probes_and_resources(rendered: tuple[str, list[Resource]]) -> None:
    _, resources = rendered
    pod = one(resources, "Deployment", "crew-mcp")["spec"]["template"]["spec"]
    container = server_container(resources)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # the only writable places on a read-only root
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    args = container["args"]
    assert args[:2] == ["serve", "--http"]
    port = int(args[args.index("--port") + 1])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["CREW_MCP_AUTH"]["value"]  # a non-loopback bind is allowed only with authentication


def test_the_server_image_is_the_registry_entrys_container(rendered: tuple[str, list[Resource]]) -> None:
    _, resources = rendered
    (oci,) = [p for p in load(MANIFESTS / "server.json")["packages"] if p["registryType"] == "oci"]
    assert server_container(resources)["image"] == oci["identifier"]


def test_every_crew_token_and_the_ledger_come_from_secrets_that_exist(rendered: tuple[str, list[Resource]]) -> None:
    _, resources = rendered
    container = server_container(resources)
    env = {e["name"]: e for e in container["env"]}
    crews_file = env["CREW_MCP_CONFIG"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    pod = one(resources, "Deployment", "crew-mcp")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v and crews_file.startswith(mounts[v["name"]] + "/")]
    config_map = one(resources, "ConfigMap", volume["configMap"]["name"])
    crews = tomllib.loads(config_map["data"][crews_file.rsplit("/", 1)[1]])["crews"]
    assert crews and all("token" not in c for c in crews)  # tokens live in Secrets only
    for variable in [c["token_env"] for c in crews]:
        reference = env[variable]["valueFrom"]["secretKeyRef"]
        assert reference["key"] in one(resources, "Secret", reference["name"])["stringData"]
    for item in container["env"]:
        if "valueFrom" in item:
            reference = item["valueFrom"]["secretKeyRef"]
            assert reference["key"] in one(resources, "Secret", reference["name"])["stringData"], item
    assert "CREW_MCP_LEDGER_URL" in env


def test_the_crews_file_in_the_configmap_is_one_crew_mcp_accepts(
    rendered: tuple[str, list[Resource]], tmp_path: Path
) -> None:
    _, resources = rendered
    (crews_toml,) = one(resources, "ConfigMap", "crew-mcp-crews")["data"].values()
    (tmp_path / "crews.toml").write_text(crews_toml)
    tokens = re.findall(r'token_env = "(\w+)"', crews_toml)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)} | dict.fromkeys(tokens, "test-token")
    command = [sys.executable, "-m", "crew_mcp", "--config", str(tmp_path / "crews.toml"), "--json", "crews"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [c["name"] for c in listed["crews"]] == [c["name"] for c in tomllib.loads(crews_toml)["crews"]]
    assert listed["simulated"] is False


def test_selectors_tie_service_budget_autoscaler_and_policy_to_the_server_pods(
    rendered: tuple[str, list[Resource]],
) -> None:
    _, resources = rendered
    deployment = one(resources, "Deployment", "crew-mcp")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one(resources, "Service", "crew-mcp")["spec"]["selector"].items() <= labels.items()
    assert (
        one(resources, "PodDisruptionBudget", "crew-mcp")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    )
    assert one(resources, "NetworkPolicy", "crew-mcp")["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    hpa = one(resources, "HorizontalPodAutoscaler", "crew-mcp")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "crew-mcp"}
    assert hpa["minReplicas"] >= 2 and deployment["spec"]["replicas"] >= 2
    assert one(resources, "PodDisruptionBudget", "crew-mcp")["spec"]["minAvailable"] < hpa["minReplicas"]
    pod = deployment["spec"]["template"]["spec"]
    assert one(resources, "ServiceAccount", pod["serviceAccountName"])


def test_the_team_overlay_points_the_ledger_at_its_own_password_protected_redis() -> None:
    resources = render(KUSTOMIZATIONS["team"])
    env = server_container(resources)["env"]
    names = [e["name"] for e in env]
    ledger = env[names.index("CREW_MCP_LEDGER_URL")]["value"]
    # $(REDIS_PASSWORD) is expanded only from a variable defined earlier in the list.
    assert names.index("REDIS_PASSWORD") < names.index("CREW_MCP_LEDGER_URL")
    match = re.fullmatch(r"redis://:\$\(REDIS_PASSWORD\)@([\w-]+):(\d+)/0", ledger)
    assert match is not None, ledger
    service = one(resources, "Service", match.group(1))
    assert int(match.group(2)) in [p["port"] for p in service["spec"]["ports"]]
    redis = one(resources, "Deployment", "crew-mcp-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= redis_labels.items()
    (redis_container,) = redis["spec"]["template"]["spec"]["containers"]
    server_secret = env[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"]
    redis_secret = {e["name"]: e for e in redis_container["env"]}["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert server_secret == redis_secret
    assert "$(REDIS_PASSWORD)" in redis_container["args"] and "--appendonly" in redis_container["args"]
    claim = redis["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert one(resources, "PersistentVolumeClaim", claim)
    assert "ledger-url" not in one(resources, "Secret", "crew-mcp-secrets")["stringData"]
    server_labels = one(resources, "Deployment", "crew-mcp")["spec"]["template"]["metadata"]["labels"]
    (admitted,) = one(resources, "NetworkPolicy", "crew-mcp-redis")["spec"]["ingress"]
    assert admitted["from"][0]["podSelector"]["matchLabels"].items() <= server_labels.items()
    egress = one(resources, "NetworkPolicy", "crew-mcp")["spec"]["egress"]
    (to_redis,) = [rule for rule in egress if rule["ports"][0]["port"] == 6379]
    assert to_redis["to"][0]["podSelector"]["matchLabels"].items() <= redis_labels.items()
