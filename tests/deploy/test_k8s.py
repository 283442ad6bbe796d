"""deploy/k8s validated offline: every core Kubernetes object against the Kubernetes OpenAPI schemas
that the kubernetes-validate package ships (strict: unknown fields are errors), for the oldest and
newest Kubernetes it knows that has gRPC probes; the KServe InferenceService (a CRD whose schema no
registry package ships) is checked for what KServe's Triton runtime needs."""
from __future__ import annotations

import copy
import pathlib

import pytest
import yaml
from kubernetes_validate import utils as kv

K8S = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSIONS = ("1.27.0", kv.latest_version())  # gRPC probes are GA since 1.27
CORE_FILES = ("server.yaml", "server-hpa.yaml", "prometheus-adapter-rules.yaml")


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_every_manifest_file_is_covered() -> None:
    assert sorted(p.name for p in K8S.glob("*.yaml")) == sorted((*CORE_FILES, "triton-inferenceservice.yaml"))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", CORE_FILES)
def test_core_objects_validate_strictly(name: str, version: str) -> None:
    docs = _documents(name)
    assert docs
    for doc in docs:
        kv.validate(doc, version, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = next(d for d in _documents("server.yaml") if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError, match="two"):
        kv.validate(broken, VERSIONS[-1], strict=True)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"grpc": {"port": 8001}}
    with pytest.raises(kv.ValidationError, match="readinessprobe"):
        kv.validate(typo, VERSIONS[-1], strict=True)


def test_server_probes_metrics_and_autoscaling_fit_together() -> None:
    server = {d["kind"] + "/" + d["metadata"]["name"]: d for d in _documents("server.yaml")}
    container = server["Deployment/splitinfer-server"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"]  # grpc.health.v1, served by cloud_server
    annotations = server["Deployment/splitinfer-server"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert server["Service/splitinfer-server-headless"]["spec"]["clusterIP"] == "None"
    hpa = _documents("server-hpa.yaml")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "splitinfer-server"
    metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")["pods"]["metric"]["name"]
    rules = yaml.safe_load(_documents("prometheus-adapter-rules.yaml")[0]["data"]["config.yaml"])["rules"]
    assert metric in {r["name"].get("as") for r in rules}
    from cloud_server.metrics import PrometheusObserver  # the metric the adapter reads is one the server exports

    exported = {m.name for m in PrometheusObserver().registry.collect()}
    assert metric in exported


def test_inference_service_serves_the_export_triton_repository_on_kserve_triton() -> None:
    (isvc,) = _documents("triton-inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and model["runtime"] == "kserve-tritonserver"
    assert model["protocolVersion"] == "grpc-v2" and {"name": "h2c", "containerPort": 9000, "protocol": "TCP"} in model["ports"]
    assert model["storageUri"].startswith(("pvc://", "s3://", "gs://"))
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    # the predictor's resources are core ResourceRequirements: validate that part against the schema
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "kserve-container", "image": "x", "args": model["args"],
                                    "ports": model["ports"], "resources": model["resources"]}]}}
    kv.validate(pod, VERSIONS[-1], strict=True)
