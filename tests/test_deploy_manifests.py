"""deploy/kuberay/ validated without a cluster or kubectl: Kubernetes' own JSON schemas
(kubernetes-validate, strict: unknown fields are errors), KubeRay's RayCluster schema (vendored
in tests/data/kuberay/, strict too), and what the files must agree on with the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import tomllib
import yaml
from packaging.requirements import Requirement

from workers.worker_cli import _check_ray_args, build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kuberay"
RAYCLUSTER_SCHEMA = ROOT / "tests" / "data" / "kuberay" / "rayclusters.ray.io-v1.schema.json"
KUBERNETES = "1.30"  # the oldest Kubernetes the files must suit (KubeRay 1.7 supports it)


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


DOCUMENTS = _documents()


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in DOCUMENTS if document["kind"] == kind]


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as `kubectl apply --validate=strict` does.

    A structural schema lists every field; the API server prunes (or, strict, rejects) the rest.
    JSON Schema allows them unless told otherwise.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _raycluster() -> dict[str, Any]:
    (cluster,) = _of_kind("RayCluster")
    return cluster


def _pod_templates(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    spec = cluster["spec"]
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def test_the_deploy_folder_holds_what_docs_scale_md_applies() -> None:
    kinds = sorted(document["kind"] for _, document in DOCUMENTS)
    assert kinds == sorted(
        ["RayCluster", "Deployment", "Service", "Service", "StatefulSet", "Secret", "Secret"]
    )
    scale = (ROOT / "docs" / "scale.md").read_text()
    for path in DEPLOY.glob("*.yaml"):
        assert f"deploy/kuberay/{path.name}" in scale, path.name


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(d, id=f"{name}:{d['kind']}")
        for name, d in DOCUMENTS
        if d["kind"] != "RayCluster"
    ],
)
def test_kubernetes_objects_are_valid_for_the_api_server(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_raycluster_is_valid_for_kuberay_and_its_pods_for_kubernetes() -> None:
    import json

    cluster = _raycluster()
    schema = _strict(json.loads(RAYCLUSTER_SCHEMA.read_text()))
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(cluster)
    ]
    assert not errors, errors
    # The CRD takes each pod template as it is; the API server then checks it as a pod.
    for template in _pod_templates(cluster):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, KUBERNETES, strict=True)


def test_a_typo_in_the_raycluster_is_caught() -> None:
    import copy
    import json

    cluster = copy.deepcopy(_raycluster())
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 8  # maxReplicas misspelt
    schema = _strict(json.loads(RAYCLUSTER_SCHEMA.read_text()))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(cluster))
    pod = copy.deepcopy(_pod_templates(cluster)[1])
    pod["spec"]["containers"][0]["resource"] = {}  # resources misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": pod},
            KUBERNETES,
            strict=True,
        )


def _driver_command(cluster: dict[str, Any]) -> list[str]:
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    script = " ".join(head["args"]).replace("\\\n", " ")
    line = next(line for line in script.splitlines() if "actsearch worker" in line)
    words = shlex.split(line)
    return words[words.index("worker") + 1 :]


def test_the_head_runs_the_driver_with_flags_that_fit_the_gpu_group() -> None:
    cluster = _raycluster()
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert "$KUBERAY_GEN_RAY_START_CMD &" in head["args"][0]  # Ray first, in the background
    assert head["args"][0].count("exec ") == 1  # the driver is the process SIGTERM reaches

    args = build_parser().parse_args(_driver_command(cluster))
    _check_ray_args(args)  # what `actsearch worker` itself would refuse
    assert args.ray == "auto" and args.gpus == "all"

    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    (worker,) = group["template"]["spec"]["containers"]
    limits = worker["resources"]["limits"]
    gpus = int(limits["nvidia.com/gpu"])
    assert gpus >= 1
    assert args.max_slots == group["maxReplicas"] * gpus * args.per_gpu
    # The slots sharing a node's GPUs fit its CPUs, so the autoscaler's node fits the request.
    assert args.per_gpu * gpus * args.ray_cpus_per_slot <= float(limits["cpu"])
    grace = spec["headGroupSpec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    from workers.ray_driver import ABORT_S, DRAIN_S

    assert grace >= DRAIN_S + ABORT_S  # the drain ends before Kubernetes kills the head


def test_ray_version_is_the_image_s_and_within_the_extra() -> None:
    version = _raycluster()["spec"]["rayVersion"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(rf'"ray\[default\]=={re.escape(version)}"', dockerfile), dockerfile
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (ray,) = [Requirement(r) for r in extras["optional-dependencies"]["ray"]]
    assert ray.name == "ray" and version in ray.specifier


def test_secrets_named_by_pods_exist_with_their_keys() -> None:
    secrets = {s["metadata"]["name"]: set(s.get("stringData", {})) for s in _of_kind("Secret")}
    templates = [d["spec"]["template"] for d in _of_kind("Deployment") + _of_kind("StatefulSet")]
    templates += _pod_templates(_raycluster())
    named = 0
    for template in templates:
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    named += 1
                    assert ref["key"] in secrets.get(ref["name"], set()), ref
    assert named >= 4  # migrate, api, the driver, postgres


def test_services_select_pods_and_ports_that_exist() -> None:
    workloads = _of_kind("Deployment") + _of_kind("StatefulSet")
    for service in _of_kind("Service"):
        selector = service["spec"]["selector"].items()
        (workload,) = [
            w for w in workloads if selector <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selector <= workload["spec"]["selector"]["matchLabels"].items()
        ports = {
            port.get("name")
            for container in workload["spec"]["template"]["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    (statefulset,) = _of_kind("StatefulSet")
    assert statefulset["spec"]["serviceName"] in {
        s["metadata"]["name"] for s in _of_kind("Service")
    }
