"""The Kubernetes overlays render, validate against a pinned API schema, and keep their promises.

Each test states one property of the deployment (probes, GPU placement, non-root, draining,
admin-API restriction, port agreement, autoscaling wiring) and checks it on ``kubectl kustomize``
output, i.e. on exactly what ``kubectl apply -k`` would send.
"""

from __future__ import annotations

import os
import re
from typing import Any

import kubernetes_validate
import pytest

from bge_deploy.serving.argv_secret import PLACEHOLDER
from bge_export.settings import ExportSettings

# Oldest Kubernetes minor we promise to run on; kubernetes-validate ships its schema.
KUBERNETES_VERSION = "1.30.0"
# Custom resources: kubernetes-validate only knows built-in kinds, so these are checked by the
# ServiceMonitor test below instead of by schema.
CRD_KINDS = {"ServiceMonitor"}

MODEL = "bge-large-zh-v1.5"
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
GATEWAY_PORT = 30000
RESTRICTED_APIS = {"model-repository", "shared-memory", "trace", "logging", "statistics"}
TRITON_DEFAULT_EXIT_TIMEOUT_S = 30
ADMIN_KEY_ENV = "BGE_TRITON_ADMIN_KEY"

Manifest = dict[str, Any]


def test_overlay_renders_the_whole_service(overlay: Any) -> None:
    """Both flavours ship the same set of objects; only their contents differ."""
    names = {(d["kind"], d["metadata"]["name"]) for d in overlay.docs}
    assert names == {
        ("Namespace", "bge"),
        ("PersistentVolumeClaim", "model-repository"),
        ("PersistentVolumeClaim", "hf-cache"),
        ("Job", "bge-export"),
        ("Deployment", "triton"),
        ("Service", "triton"),
        ("PodDisruptionBudget", "triton"),
        ("HorizontalPodAutoscaler", "triton"),
        ("Deployment", "bge-gateway"),
        ("Service", "bge-gateway"),
        ("PodDisruptionBudget", "bge-gateway"),
        ("NetworkPolicy", "default-deny-ingress"),
        ("NetworkPolicy", "triton"),
        ("NetworkPolicy", "bge-gateway"),
        ("ServiceMonitor", "triton"),
        ("ServiceMonitor", "bge-gateway"),
    }
    namespaced = [d for d in overlay.docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"bge"}
    for doc in overlay.docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bge-triton", doc["metadata"]["name"]


def test_schema_valid(overlay: Any) -> None:
    """Strict schema validation (unknown fields are errors) against the pinned Kubernetes version."""
    errors = []
    for doc in overlay.docs:
        if doc["kind"] in CRD_KINDS:
            continue  # no schema in kubernetes-validate for CRDs; see test_service_monitors_*
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.absolute_path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_triton_probes(overlay: Any) -> None:
    """Ready means the ensemble answers; live means the server process does."""
    triton = overlay.triton
    model_ready = f"/v2/models/{MODEL}/ready"
    assert triton["startupProbe"]["httpGet"]["path"] == model_ready
    assert triton["readinessProbe"]["httpGet"]["path"] == model_ready
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert _container_port(triton, triton[probe]["httpGet"]["port"]) == TRITON_PORTS["http"], probe


def test_startup_probe_outlasts_model_load(overlay: Any) -> None:
    """Liveness must not kill a pod that is still loading (or, on GPU, building TensorRT kernels)."""
    probe = overlay.triton["startupProbe"]
    budget_s = probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    if overlay.overlay == "gpu":
        assert budget_s >= 20 * 60
    # The launcher gives up on its own (and prints Triton's log) before the probe does.
    ready_timeout = float(_flag_value(overlay.triton["args"], "--ready-timeout"))
    assert ready_timeout < budget_s


def test_triton_runs_the_launcher_with_its_watchdog(overlay: Any, dockerfiles: dict[str, Any]) -> None:
    """Both flavours run bge-triton, so a dead Python-backend stub is restarted on GPU as on CPU."""
    assert overlay.triton["command"] == ["bge-triton"]
    assert overlay.runs_launcher(), overlay.triton_argv
    assert dockerfiles[f"triton-{overlay.overlay}"].runs_launcher()
    # Triton's log on stdout (kubectl logs), not in a file inside the container's /tmp.
    assert "--verbose" in overlay.triton["args"]


def _gpus(container: Manifest) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def test_gpu_limits_only_on_triton_pods_in_the_gpu_overlay(cpu: Any, gpu: Any) -> None:
    """One GPU per Triton pod (its plan is built on it, then served from it); nothing else asks for one."""
    assert "nvidia.com/gpu" not in cpu.text.replace("nvidia.com/gpu.product", "")
    assert _gpus(gpu.triton) == 1
    assert [c["name"] for c in gpu.triton_pod["initContainers"] if _gpus(c)] == ["build-tensorrt-plan"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu.triton_pod["tolerations"]
    for workload, spec in gpu.pod_specs().items():
        if workload != "Deployment/triton":
            assert not [c for c in [*spec.get("initContainers", []), *spec["containers"]] if _gpus(c)], workload
            assert "tolerations" not in spec, f"{workload} would land on (and wait for) GPU nodes"


def test_no_gpu_deadlock_the_job_never_waits_for_a_gpu(overlay: Any) -> None:
    """Triton pods hold their GPU while their first init container waits for the Job's publish; so the
    Job must need no GPU, or a cluster whose GPUs all hold waiting Triton pods never exports."""
    job = overlay.one("Job", "bge-export")["spec"]["template"]["spec"]
    assert not any(_gpus(c) for c in [*job.get("initContainers", []), *job["containers"]])
    assert "nodeSelector" not in job and "affinity" not in job
    # What is run before what in a Triton pod: stage (waits for the publish) -> [build the plan] -> serve.
    order = [c["name"] for c in overlay.triton_pod["initContainers"]]
    assert (
        order
        == {"cpu": ["stage-model-repository"], "gpu": ["stage-model-repository", "build-tensorrt-plan"]}[
            overlay.overlay
        ]
    )
    # The GPU builder reads and writes the pod's copy only, never the shared volume.
    for name in order[1:]:
        container = next(c for c in overlay.triton_pod["initContainers"] if c["name"] == name)
        assert "model-repository" not in {m["name"] for m in container["volumeMounts"]}, name


def test_every_pod_runs_as_non_root(overlay: Any) -> None:
    """No workload runs as root or can gain privileges, init containers included."""
    for workload, spec in overlay.pod_specs().items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, workload
        assert pod["runAsUser"] > 0, workload
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert spec["automountServiceAccountToken"] is False, workload
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            where = f"{workload}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert security.get("runAsUser", pod["runAsUser"]) > 0, where


def test_dev_shm_is_memory_backed(overlay: Any) -> None:
    """The Python backend moves tensors through /dev/shm; the runtime's 64 MiB default is too small."""
    mounts = {m["mountPath"]: m["name"] for m in overlay.triton["volumeMounts"]}
    volumes = {v["name"]: v for v in overlay.triton_pod["volumes"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    assert _quantity_bytes(shm["sizeLimit"]) >= 256 * 2**20


def test_termination_grace_outlasts_drain(overlay: Any) -> None:
    """SIGKILL comes only after the preStop sleep and Triton's own drain (exit timeout) are over."""
    flags = overlay.triton_flags()
    exit_timeout = (
        int(flags.one("exit-timeout-secs")) if "exit-timeout-secs" in flags else TRITON_DEFAULT_EXIT_TIMEOUT_S
    )
    grace = overlay.triton_pod["terminationGracePeriodSeconds"]
    assert grace > exit_timeout + _pre_stop_sleep_s(overlay.triton)
    gateway_pod = overlay.one("Deployment", "bge-gateway")["spec"]["template"]["spec"]
    assert gateway_pod["terminationGracePeriodSeconds"] > _pre_stop_sleep_s(overlay.gateway)


def test_admin_apis_restricted(overlay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model control and the other admin APIs need a key that comes from a Secret, on HTTP and gRPC."""
    # The launcher reads the key from the container's env, which the Secret fills.
    monkeypatch.setenv(ADMIN_KEY_ENV, "key-from-the-secret")
    flags = overlay.triton_flags()
    assert flags.one("model-control-mode") == "none"
    for flag in ("http-restricted-api", "grpc-restricted-protocol"):
        apis, _, header = flags.one(flag).partition(":")
        assert set(apis.split(",")) == RESTRICTED_APIS, flag
        key_name, _, key_value = header.partition("=")
        # the key itself reaches tritonserver through the argv_secret helper, never its command line
        assert key_name and key_value == PLACEHOLDER, f"--{flag}: {flags.one(flag)!r}"
    assert not any("key-from-the-secret" in value for values in flags.values() for value in values)
    admin_key = overlay.env(overlay.triton)[ADMIN_KEY_ENV]["valueFrom"]["secretKeyRef"]
    assert admin_key["name"] == "triton-admin"
    # Required: without it the launcher would restrict with a random key that no operator knows.
    assert not admin_key.get("optional", False)
    assert "--no-restrict-admin-apis" not in overlay.triton.get("args", [])


def test_gpu_and_cpu_restrict_with_the_same_header(cpu: Any, gpu: Any) -> None:
    """One admin header for operators to remember, whichever image serves."""
    headers = {name: _restriction_header(r.triton_flags()) for name, r in (("cpu", cpu), ("gpu", gpu))}
    assert headers["cpu"] == headers["gpu"]


def test_triton_ports_agree(overlay: Any) -> None:
    """Container ports, tritonserver flags and the ClusterIP Service name the same numbers."""
    flags = overlay.triton_flags()
    container_ports = {p["name"]: p["containerPort"] for p in overlay.triton["ports"]}
    assert container_ports == TRITON_PORTS
    assert {name: int(flags.one(f"{name}-port")) for name in TRITON_PORTS} == TRITON_PORTS
    service = overlay.one("Service", "triton")
    assert service["spec"]["type"] == "ClusterIP"
    for port in service["spec"]["ports"]:
        assert port["port"] == TRITON_PORTS[port["name"]]
        assert _container_port(overlay.triton, port["targetPort"]) == port["port"]
    assert _selects(service["spec"]["selector"], _pod_labels(overlay, "triton"))


def test_gateway_reaches_triton_grpc(overlay: Any) -> None:
    """The gateway's Triton URL is the triton Service's gRPC port, and it serves our model name."""
    env = overlay.env(overlay.gateway)
    host, _, port = env["BGE_GATEWAY_TRITON_URL"]["value"].partition(":")
    service = overlay.one("Service", host)
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert int(port) == service_ports["grpc"] == TRITON_PORTS["grpc"]
    assert env["BGE_GATEWAY_MODEL_NAME"]["value"] == MODEL
    api_key = env["BGE_GATEWAY_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert api_key["optional"] is True  # an open gateway is a choice, not a crash


def test_gateway_ports_agree(overlay: Any) -> None:
    """BGE_GATEWAY_PORT, the container port and the Service's target are one port."""
    env = overlay.env(overlay.gateway)
    assert int(env["BGE_GATEWAY_PORT"]["value"]) == GATEWAY_PORT
    assert _container_port(overlay.gateway, "http") == GATEWAY_PORT
    service = overlay.one("Service", "bge-gateway")
    (port,) = service["spec"]["ports"]
    assert _container_port(overlay.gateway, port["targetPort"]) == GATEWAY_PORT
    assert _selects(service["spec"]["selector"], _pod_labels(overlay, "bge-gateway"))
    assert overlay.gateway["readinessProbe"]["httpGet"]["path"] == "/health"
    # Liveness must not follow Triton's health, or a Triton outage restarts every gateway.
    assert "httpGet" not in overlay.gateway["livenessProbe"]


def test_only_the_gateway_is_exposed(overlay: Any) -> None:
    """Every Service but the gateway's stays inside the cluster."""
    types = {s["metadata"]["name"]: s["spec"].get("type", "ClusterIP") for s in overlay.all("Service")}
    exposed = {name for name, kind in types.items() if kind != "ClusterIP"}
    assert exposed == {"bge-gateway"}


def test_network_policy(overlay: Any) -> None:
    """Default deny; Triton gRPC only from gateway pods, metrics only from monitoring; HTTP closed."""
    deny = overlay.one("NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny

    policy = overlay.one("NetworkPolicy", "triton")["spec"]
    assert _selects(policy["podSelector"]["matchLabels"], _pod_labels(overlay, "triton"))
    opened: dict[int, list[Manifest]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            opened.setdefault(port["port"], []).extend(rule["from"])
    assert set(opened) == {TRITON_PORTS["grpc"], TRITON_PORTS["metrics"]}

    (grpc_peer,) = opened[TRITON_PORTS["grpc"]]
    assert set(grpc_peer) == {"podSelector"}  # same namespace, gateway pods only
    assert _selects(grpc_peer["podSelector"]["matchLabels"], _pod_labels(overlay, "bge-gateway"))
    (metrics_peer,) = opened[TRITON_PORTS["metrics"]]
    assert metrics_peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}

    gateway = overlay.one("NetworkPolicy", "bge-gateway")["spec"]
    assert _selects(gateway["podSelector"]["matchLabels"], _pod_labels(overlay, "bge-gateway"))
    assert [p["port"] for rule in gateway["ingress"] for p in rule["ports"]] == [GATEWAY_PORT]


def test_disruption_budgets_cover_both_deployments(overlay: Any) -> None:
    """A drain never takes the last Triton or gateway pod."""
    for name in ("triton", "bge-gateway"):
        pdb = overlay.one("PodDisruptionBudget", name)["spec"]
        assert _selects(pdb["selector"]["matchLabels"], _pod_labels(overlay, name))
        assert pdb["maxUnavailable"] == 1
    assert overlay.one("Deployment", "bge-gateway")["spec"]["replicas"] >= 2
    assert overlay.one("HorizontalPodAutoscaler", "triton")["spec"]["minReplicas"] >= 2


def test_hpa_scales_triton_on_queue_time_with_cpu_fallback(overlay: Any, adapter_values: Manifest) -> None:
    """autoscaling/v2 on the prometheus-adapter metric, plus CPU utilisation as the fallback."""
    hpa = overlay.one("HorizontalPodAutoscaler", "triton")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "triton")
    # The HPA owns the replica count; a replicas field would fight it on every apply.
    assert "replicas" not in overlay.one("Deployment", "triton")["spec"]

    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(metrics) == {"Pods", "Resource"}
    published = {rule["name"]["as"] for rule in adapter_values["rules"]["custom"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] in published
    assert metrics["Pods"]["pods"]["target"]["type"] == "AverageValue"
    cpu = metrics["Resource"]["resource"]
    assert cpu["name"] == "cpu" and cpu["target"]["type"] == "Utilization"
    # Utilisation is relative to the request: without one the fallback never fires.
    assert "cpu" in overlay.triton["resources"]["requests"]


def test_adapter_rule_computes_queue_time_per_request(overlay: Any, adapter_values: Manifest) -> None:
    """The rule divides queue microseconds by successful ensemble requests, per pod."""
    hpa = overlay.one("HorizontalPodAutoscaler", "triton")
    name = next(m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    (rule,) = [r for r in adapter_values["rules"]["custom"] if r["name"]["as"] == name]
    assert rule["seriesQuery"].startswith("nv_inference_queue_duration_us{")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    numerator, _, denominator = rule["metricsQuery"].partition(" / ")
    assert "nv_inference_queue_duration_us" in numerator and "<<.LabelMatchers>>" in numerator
    assert "nv_inference_request_success" in denominator and f'model="{MODEL}"' in denominator
    assert f'model=~"{MODEL}-(tokenizer|encoder)"' in numerator


def test_service_monitors_scrape_named_ports(overlay: Any) -> None:
    """CRDs skip schema validation, so check by hand: each selects a Service and one of its ports."""
    for monitor in overlay.all("ServiceMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        services = [
            s
            for s in overlay.all("Service")
            if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
    triton_monitor = overlay.one("ServiceMonitor", "triton")
    assert [e["port"] for e in triton_monitor["spec"]["endpoints"]] == ["metrics"]
    # The gateway guards /metrics with its API key when one is set: scrape with the same Secret.
    (gateway_endpoint,) = overlay.one("ServiceMonitor", "bge-gateway")["spec"]["endpoints"]
    api_key = overlay.env(overlay.gateway)["BGE_GATEWAY_API_KEY"]["valueFrom"]["secretKeyRef"]
    credentials = gateway_endpoint["authorization"]["credentials"]
    assert (credentials["name"], credentials["key"]) == (api_key["name"], api_key["key"])


def test_export_job_publishes_what_pods_stage_and_triton_serves_its_own_copy(overlay: Any) -> None:
    """Job -> PVC (versions + CURRENT) -> each pod's emptyDir -> Triton; nobody serves from the shared volume."""
    job_spec = overlay.one("Job", "bge-export")["spec"]["template"]["spec"]
    export = job_spec["containers"][0]
    claim = overlay.one("PersistentVolumeClaim", "model-repository")["metadata"]["name"]
    stage = next(c for c in overlay.triton_pod["initContainers"] if c["name"] == "stage-model-repository")

    job_mount = _mount_of_claim(job_spec, export, claim)
    stage_mount = _mount_of_claim(overlay.triton_pod, stage, claim)
    assert stage_mount.get("readOnly") is True
    publish_root = overlay.env(export)["BGE_EXPORT_PUBLISH_ROOT"]["value"]
    staged_from = overlay.env(stage)["BGE_STAGE_PUBLISHED"]["value"]
    assert publish_root.removeprefix(job_mount["mountPath"]) == staged_from.removeprefix(stage_mount["mountPath"])
    assert publish_root.startswith(job_mount["mountPath"] + "/"), "not the volume root: it may hold lost+found"
    assert overlay.env(stage)["BGE_STAGE_MODEL"]["value"] == MODEL
    assert stage["image"] == overlay.triton["image"]

    # Triton mounts the pod's copy, read-only, at the repository it serves; no subPath of the shared claim
    # (a re-export or prune would pull the folder from under it).
    volumes = {v["name"]: v for v in overlay.triton_pod["volumes"]}
    (served,) = [
        m for m in overlay.triton["volumeMounts"] if m["mountPath"] == overlay.triton_flags().one("model-repository")
    ]
    assert "emptyDir" in volumes[served["name"]] and served.get("readOnly") is True
    assert not [m for m in overlay.triton["volumeMounts"] if "persistentVolumeClaim" in volumes[m["name"]]]
    (staged_into,) = [m for m in stage["volumeMounts"] if m["name"] == served["name"]]
    assert overlay.env(stage)["BGE_STAGE_TO"]["value"] == staged_into["mountPath"]
    assert all(
        "subPath" not in m
        for spec in overlay.pod_specs().values()
        for c in spec["containers"]
        for m in c.get("volumeMounts", [])
    )

    env = {name: entry["value"] for name, entry in overlay.env(export).items()}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert _mount_of_claim(job_spec, export, "hf-cache")["mountPath"] == env["HF_HOME"]
    # The Job configures bge-export only through its settings model: every BGE_EXPORT_* entry is a
    # field of it (a misspelt one would be silently ignored), and the settings it yields are the
    # overlay's promise.
    export_env = {name: value for name, value in env.items() if name.startswith("BGE_EXPORT_")}
    fields = {f"BGE_EXPORT_{field.upper()}" for field in ExportSettings.model_fields}
    assert set(export_env) <= fields, set(export_env) - fields
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("BGE_EXPORT_")]:
            patch.delenv(name)
        for name, value in export_env.items():
            patch.setenv(name, value)
        settings = ExportSettings()
    assert settings.model == "BAAI/bge-large-zh-v1.5"
    assert settings.backend.value == {"cpu": "python", "gpu": "tensorrt"}[overlay.overlay]
    assert settings.precision.value == {"cpu": "fp32", "gpu": "fp16"}[overlay.overlay]
    assert export["command"] == ["bge-export"] and "args" not in export, "configure it with BGE_EXPORT_* entries"
    assert settings.publish_root is not None and str(settings.workdir).startswith("/tmp/")
    assert settings.build_engine is (overlay.overlay == "cpu"), "GPU plans are built by the Triton pods"
    if overlay.overlay == "cpu":
        # CPU encoder: instances x lanes x threads fit the Triton pod's CPU request (no CPU limit, so the
        # stub's default, the node's cores shared out, would oversubscribe a big node).
        threads, instances, lanes = settings.intra_op_threads, settings.instances, settings.lanes
        assert threads >= 1 and lanes >= 1 and instances is not None
        assert threads * instances * lanes <= int(overlay.triton["resources"]["requests"]["cpu"])


def test_images_match_their_dockerfiles(overlay: Any, dockerfiles: dict[str, Any]) -> None:
    """Each image the overlay runs has a Dockerfile whose ports and user agree with the manifest."""
    dockerfile_of = {
        "bge-triton-cpu": "triton-cpu",
        "bge-triton-gpu": "triton-gpu",
        "bge-gateway": "gateway",
        "bge-export-cpu": "export",
        "bge-export-gpu": "export",
    }
    for workload, spec in overlay.pod_specs().items():
        for container in spec["containers"]:
            repository = container["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
            dockerfile = dockerfiles[dockerfile_of[repository]]
            ports = {p["containerPort"] for p in container.get("ports", [])}
            assert ports == set(dockerfile.expose), f"{workload}: {container['image']}"
            assert dockerfile.user == f"{spec['securityContext']['runAsUser']}:{spec['securityContext']['runAsGroup']}"
    assert overlay.triton["image"].startswith(f"bge-triton-{overlay.overlay}:")


def test_gpu_overlay_matches_compose(gpu: Any, compose: Any, dockerfiles: dict[str, Any]) -> None:
    """The single-box compose file runs the same images and Triton flags as the GPU overlay."""
    images = {
        c["image"] for spec in gpu.pod_specs().values() for c in [*spec.get("initContainers", []), *spec["containers"]]
    }
    # Compose's export runs alone on the box's GPU before Triton starts, so it builds the plan itself
    # (GPU image); the cluster's Job exports ONNX on CPU (CPU image) and each Triton pod builds its plan.
    assert {compose.service(name)["image"] for name in ("export", "triton", "gateway")} == images - {
        "bge-export-cpu:0.1.0"
    }
    assert "--backend=tensorrt" in compose.service("export")["command"]
    assert not [f for f in compose.service("export")["command"] if "build-engine" in f]
    assert compose.service("triton")["depends_on"]["export"]["condition"] == "service_completed_successfully"
    # One bge-triton command line for the GPU image: overlay, compose and the image's own default.
    assert gpu.triton_argv == compose.service("triton")["command"] == dockerfiles["triton-gpu"].argv
    assert set(compose.service("triton")["environment"]) == {
        name for name, entry in gpu.env(gpu.triton).items() if "valueFrom" in entry
    }
    k8s, box = gpu.triton_flags(), compose.triton_flags()
    for flag in (
        "model-repository",
        "model-control-mode",
        "http-port",
        "grpc-port",
        "metrics-port",
        "exit-timeout-secs",
    ):
        assert k8s.one(flag) == box.one(flag), flag
    for flag in ("http-restricted-api", "grpc-restricted-protocol"):
        assert k8s.one(flag).split("=")[0] == box.one(flag).split("=")[0], flag
    gateway_env = compose.service("gateway")["environment"]
    for name, entry in gpu.env(gpu.gateway).items():
        if "value" in entry:
            assert gateway_env[name] == entry["value"], name


# -- helpers -----------------------------------------------------------------------------------


def _container_port(container: Manifest, port: int | str) -> int:
    """Resolve a probe's or Service's port (number or name) against the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def _pod_labels(overlay: Any, deployment: str) -> dict[str, str]:
    return overlay.one("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _mount_of_claim(pod_spec: Manifest, container: Manifest, claim: str) -> Manifest:
    volume = next(
        v["name"] for v in pod_spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    )
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    return mount


def _pre_stop_sleep_s(container: Manifest) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


def _flag_value(args: list[str], name: str) -> str:
    (value,) = [a.partition("=")[2] for a in args if a.startswith(f"{name}=")]
    return value


def _restriction_header(flags: Any) -> str:
    return flags.one("http-restricted-api").partition(":")[2].partition("=")[0]


def _quantity_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", quantity)
    assert match, f"unsupported quantity {quantity!r}"
    return int(match[1]) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[match[2]]
