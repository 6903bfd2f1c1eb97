"""Checks of the rendered kustomize output (k8s/overlays/*) and of k8s/monitoring: the
properties docs/deploy.md promises, on what `kubectl apply -k` would really send."""

import json
import os
import pathlib
import re
import subprocess

import pytest
import yaml

from conftest import K8S, REPO, helm_render, objects, one, render

# The overlays whose pods serve the webhook; overlays/eks-private pulls SQS instead.
WEBHOOK_OVERLAYS = ["base", "overlays/eks", "overlays/local"]
PRIVATE_OVERLAY = "overlays/eks-private"
OVERLAYS = WEBHOOK_OVERLAYS + [PRIVATE_OVERLAY]
# Configuration only the queue path sets.
QUEUE_KEYS = {
    "SSM_RESYNC_WEBHOOK",
    "SSM_RESYNC_SQS_QUEUE_URL",
    "SSM_RESYNC_SQS_ACCEPT_EVENTBRIDGE",
    "SSM_RESYNC_SQS_RECEIVERS",
    "SSM_RESYNC_SQS_VISIBILITY_TIMEOUT",
}
ALERTS = {
    "SSMResyncDown",
    "SSMResyncNotSynced",
    "SSMResync503s",
    "SSMResyncPatchFailures",
    "SSMResyncRejectionsRising",
    "SSMResyncCertFetchFailures",
    "SSMResyncWatchStalled",
    "SSMResyncNoNotifications",
    "SSMResyncNotRefreshed",
    "SSMResyncEventMalformed",
    "SSMResyncLagHigh",
}
# The queue path's alerts, in their own group.
QUEUE_ALERTS = {
    "SSMResyncQueueStuck",
    "SSMResyncQueueReceiveFailing",
    "SSMResyncQueueNotReceiving",
    "SSMResyncQueueLagHigh",
}
EXPECTED_RULES = {
    ("external-secrets.io", "externalsecrets"): {"list", "watch", "patch"},
    ("external-secrets.io", "secretstores"): {"list", "watch"},
    ("external-secrets.io", "clustersecretstores"): {"list", "watch"},
    ("external-secrets.io", "clusterexternalsecrets"): {"list", "watch", "patch"},
    ("kubernetes-client.io", "externalsecrets"): {"list", "watch"},
    ("kubernetes-client.io", "externalsecrets/status"): {"patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get"},
}


def container(overlay: str) -> dict:
    dep = one(overlay, "Deployment", "ssm-resync")
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "ssm-resync"]
    return c


def config(overlay: str) -> dict:
    (cm,) = [o for o in objects(overlay, "ConfigMap") if o["metadata"]["name"].startswith("ssm-resync-config-")]
    return cm["data"]


def rule_map(rules: list[dict]) -> dict:
    out = {}
    for r in rules:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                out.setdefault((g, res), set()).update(r["verbs"])
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_into_one_namespace(overlay):
    docs = render(overlay)
    assert docs
    for o in docs:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"].get("namespace") == "ssm-resync", (o["kind"], o["metadata"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_security(overlay):
    dep = one(overlay, "Deployment", "ssm-resync")
    pod = dep["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == "ssm-resync"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    sc = container(overlay)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not sc.get("privileged")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_guaranteed_qos(overlay):
    res = container(overlay)["resources"]
    assert res["requests"] == res["limits"], "Guaranteed QoS needs requests == limits"
    assert res["limits"] == {"cpu": "200m", "memory": "128Mi"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_probes_args(overlay):
    c = container(overlay)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if overlay == PRIVATE_OVERLAY:
        assert ports == {"http-admin": 9090}
    else:
        assert ports == {"http-webhook": 8080, "http-admin": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    args = c["args"]
    assert args[0] == "serve"
    assert "--topic-arn=$(SSM_RESYNC_TOPIC_ARN)" in args
    assert "--log-format=json" in args
    assert "--admin-listen=0.0.0.0:9090" in args
    assert ("--listen=0.0.0.0:8080" in args) == (overlay != PRIVATE_OVERLAY)
    env = {e["name"]: e for e in c["env"]}
    assert env["SSM_RESYNC_TOPIC_ARN"]["valueFrom"]["configMapKeyRef"]["key"] == "SSM_RESYNC_TOPIC_ARN"
    assert config(overlay)["SSM_RESYNC_TOPIC_ARN"].startswith("arn:aws:sns:")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_exceeds_request_deadline(overlay):
    pod = one(overlay, "Deployment", "ssm-resync")["spec"]["template"]["spec"]
    deadline = config(overlay)["SSM_RESYNC_REQUEST_DEADLINE"]
    m = re.fullmatch(r"(\d+)s", deadline)
    assert m, deadline
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["terminationGracePeriodSeconds"] > int(m.group(1))


def test_replicas_spread_and_disruption_budget():
    dep = one("overlays/eks", "Deployment", "ssm-resync")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    spread = {t["topologyKey"]: t for t in pod["topologySpreadConstraints"]}
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    for t in spread.values():
        assert t["labelSelector"]["matchLabels"].items() <= labels.items()
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = one("overlays/eks", "PodDisruptionBudget", "ssm-resync")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_only_sns_is_routed_to_the_webhook_port():
    (ing,) = objects("overlays/eks", "Ingress")
    a = ing["metadata"]["annotations"]
    assert a["alb.ingress.kubernetes.io/scheme"] == "internet-facing"
    assert a["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert json.loads(a["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTPS": 443}]
    assert a["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:")
    assert a["alb.ingress.kubernetes.io/ssl-policy"].startswith("ELBSecurityPolicy-TLS13")
    assert a["alb.ingress.kubernetes.io/healthcheck-port"] == "9090"
    assert a["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    assert "defaultBackend" not in ing["spec"]
    paths = [p for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]]
    assert len(paths) == 1
    (p,) = paths
    assert p["path"] == "/sns" and p["pathType"] == "Exact"
    assert p["backend"]["service"] == {"name": "ssm-resync", "port": {"name": "http-webhook"}}
    # The routed Service has the webhook port only: the admin port cannot be routed through it.
    svc = one("overlays/eks", "Service", "ssm-resync")
    assert [(sp["name"], sp["port"], sp["targetPort"]) for sp in svc["spec"]["ports"]] == [
        ("http-webhook", 8080, "http-webhook")
    ]
    admin = one("overlays/eks", "Service", "ssm-resync-admin")
    assert [(sp["name"], sp["port"]) for sp in admin["spec"]["ports"]] == [("http-admin", 9090)]


def test_irsa_only_in_eks():
    eks = one("overlays/eks", "ServiceAccount", "ssm-resync")
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/.+", eks["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
    local = one("overlays/local", "ServiceAccount", "ssm-resync")
    assert "eks.amazonaws.com/role-arn" not in (local["metadata"].get("annotations") or {})
    assert not objects("overlays/local", "Ingress")
    assert config("overlays/local")["SSM_RESYNC_TOPIC_ARN"] == "arn:aws:sns:us-east-1:123456789012:ssm-resync-local"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_exactly_what_the_code_uses_and_never_secrets(overlay):
    cr = one(overlay, "ClusterRole", "ssm-resync")
    assert rule_map(cr["rules"]) == EXPECTED_RULES
    role = one(overlay, "Role", "ssm-resync-leader-election")
    assert rule_map(role["rules"]) == {("coordination.k8s.io", "leases"): {"get", "create", "patch"}}
    for o in objects(overlay, "ClusterRole") + objects(overlay, "Role"):
        for r in o["rules"]:
            assert "secrets" not in r["resources"], o["metadata"]["name"]
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in r[field], (o["metadata"]["name"], r)
            assert "nonResourceURLs" not in r
    # The one non-ESO read: a single CRD by name (--ces-trigger auto).
    (crd_rule,) = [r for r in cr["rules"] if "customresourcedefinitions" in r["resources"]]
    assert crd_rule["resourceNames"] == ["clusterexternalsecrets.external-secrets.io"]
    crb = one(overlay, "ClusterRoleBinding", "ssm-resync")
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ssm-resync"}
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "ssm-resync", "namespace": "ssm-resync"}]


def test_network_policies():
    pols = {p["metadata"]["name"]: p["spec"] for p in objects("overlays/eks", "NetworkPolicy")}
    base = pols["ssm-resync"]
    assert set(base["policyTypes"]) == {"Ingress", "Egress"}
    (admin,) = base["ingress"]
    assert admin["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert admin["ports"] == [{"port": 9090, "protocol": "TCP"}]
    egress_ports = {(p["port"], p["protocol"]) for rule in base["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    alb = pols["ssm-resync-from-alb"]
    (rule,) = alb["ingress"]
    # The ALB's subnets (one per AZ), each no wider than a /20: never a whole VPC.
    assert len(rule["from"]) >= 2
    for src in rule["from"]:
        cidr = src["ipBlock"]["cidr"]
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+/\d+", cidr) and int(cidr.split("/")[1]) >= 20, cidr
    assert {p["port"] for p in rule["ports"]} == {8080, 9090}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_plain_test_format_is_off(overlay):
    # Anyone who may publish to the topic could name any parameters with it.
    assert config(overlay).get("SSM_RESYNC_ACCEPT_PLAIN_FORMAT", "false") == "false"


def vap_username_pattern(objs) -> re.Pattern:
    """The regular expression the policy's one matchCondition holds the username to (a CEL
    `matches`, RE2: the same as Python's re for this pattern)."""
    (vap,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"]
    (cond,) = vap["spec"]["matchConditions"]
    m = re.fullmatch(r"request\.userInfo\.username\.matches\('([^']+)'\)", cond["expression"])
    assert m, cond["expression"]
    return re.compile(m.group(1))


def check_admission_policy_follows_the_service_account(objs, what: str, subjects_too: bool = True):
    (vap,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == vap["metadata"]["name"], what
    assert binding["spec"]["validationActions"] == ["Deny"], what
    assert vap["spec"]["failurePolicy"] == "Fail", what
    (sa,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == name, what
    assert dep["metadata"]["namespace"] == ns, what
    pattern = vap_username_pattern(objs)
    assert pattern.search(f"system:serviceaccount:{ns}:{name}"), (what, pattern.pattern, ns)
    for other in (f"system:serviceaccount:{ns}:{name}-other", f"system:serviceaccount:{ns}:x{name}",
                  f"system:serviceaccount:{ns}:default", "system:admin", f"{name}",
                  f"system:serviceaccount:{ns}:{name}:x"):
        assert not pattern.search(other), (what, other)
    if subjects_too:
        for o in objs:
            if o["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                assert o["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": ns}], (what, o)


def test_admission_policy_binds_the_service_account():
    for overlay in OVERLAYS:
        check_admission_policy_follows_the_service_account(render(overlay), overlay)
    (vap,) = objects("overlays/eks", "ValidatingAdmissionPolicy")
    key = [v for v in vap["spec"]["variables"] if v["name"] == "key"][0]["expression"]
    assert key == "'" + config("overlays/eks")["SSM_RESYNC_ANNOTATION"] + "'"


# docs/deploy.md, "Another namespace": a kustomization of your own around an overlay.
AROUND = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {ns}
resources:
  - {overlay}
"""
# ...with the RoleBinding subjects moved too (kustomize's `namespace:` moves only subjects in
# no namespace or in `default`, and the overlay already set them).
SUBJECTS = """transformers:
  - |-
    apiVersion: builtin
    kind: NamespaceTransformer
    metadata:
      name: namespace
      namespace: {ns}
    setRoleBindingSubjects: allServiceAccounts
    unsetOnly: false
"""


def render_around(tmp_path, overlay: str, ns: str, subjects: bool) -> tuple:
    d = tmp_path / f"around-{overlay.replace('/', '-')}-{subjects}"
    d.mkdir()
    text = AROUND.format(ns=ns, overlay=os.path.relpath(K8S / overlay, d))
    if subjects:
        text += SUBJECTS.format(ns=ns)
    (d / "kustomization.yaml").write_text(text)
    out = subprocess.run(["kubectl", "kustomize", str(d)], check=True, capture_output=True, text=True).stdout
    return tuple(o for o in yaml.safe_load_all(out) if o)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_admission_policy_follows_the_service_account_into_another_namespace(tmp_path, overlay):
    """Until 2026-12, the policy named system:serviceaccount:ssm-resync:ssm-resync: deployed in
    another namespace, it matched nobody and silently stopped applying."""
    ns = "team-secrets"
    # The plain override: the policy follows (the bindings' subjects do not: see SUBJECTS).
    objs = render_around(tmp_path, overlay, ns, subjects=False)
    (sa,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert sa["metadata"]["namespace"] == ns
    check_admission_policy_follows_the_service_account(objs, f"{overlay} in {ns}", subjects_too=False)
    # The documented recipe: everything follows.
    objs = render_around(tmp_path, overlay, ns, subjects=True)
    check_admission_policy_follows_the_service_account(objs, f"{overlay} in {ns}, subjects moved")
    for o in objs:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding",
                             "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
            assert o["metadata"]["namespace"] == ns, (overlay, o["kind"], o["metadata"]["name"])
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"] == [ns]


def test_chart_admission_policy_names_the_release_service_account():
    for namespace, sets in (("ssm-resync", ()), ("ssm-resync", ("serviceAccount.name=resyncer",))):
        objs = helm_render("", *sets)
        (vap,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"]
        (sa,) = [o for o in objs if o["kind"] == "ServiceAccount"]
        assert vap["spec"]["matchConditions"][0]["expression"] == (
            f"request.userInfo.username == 'system:serviceaccount:{namespace}:{sa['metadata']['name']}'"
        )


def test_alb_closes_idle_connections_before_the_service_does():
    ing = one("overlays/eks", "Ingress", "ssm-resync")
    attrs = dict(
        a.split("=", 1)
        for a in ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/load-balancer-attributes"].split(",")
    )
    # --read-timeout defaults to 10 s (src/config.rs).
    assert int(attrs["idle_timeout.timeout_seconds"]) < 10


def test_service_monitor_scrapes_the_admin_service():
    (sm,) = objects("overlays/eks", "ServiceMonitor")
    admin = one("overlays/eks", "Service", "ssm-resync-admin")
    assert sm["spec"]["selector"]["matchLabels"].items() <= admin["metadata"]["labels"].items()
    webhook = one("overlays/eks", "Service", "ssm-resync")
    assert not sm["spec"]["selector"]["matchLabels"].items() <= webhook["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "http-admin" and ep["path"] == "/metrics"


# --- the queue path: nothing exposed -------------------------------------------------------


def config_of(objs) -> dict:
    """The data of the service's ConfigMap (kustomize's hashed name or Helm's <fullname>-config):
    the one the container's topic comes from."""
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and "SSM_RESYNC_TOPIC_ARN" in (o.get("data") or {})]
    return cm["data"]


def kinds_of(objs, kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def deployment_container(objs) -> tuple[dict, dict]:
    (dep,) = kinds_of(objs, "Deployment")
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "ssm-resync"]
    return dep, c


MONITORING_ONLY = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def check_private(objs, what: str):
    """What a queue-only render promises: no way in but the admin port from monitoring."""
    assert not kinds_of(objs, "Ingress"), what
    # Only the admin Service, ClusterIP, admin port: the webhook Service is not rendered.
    services = kinds_of(objs, "Service")
    assert [svc["metadata"]["name"] for svc in services] == ["ssm-resync-admin"], what
    (admin,) = services
    assert admin["spec"].get("type", "ClusterIP") == "ClusterIP", what
    assert [(p["name"], p["port"], p["targetPort"]) for p in admin["spec"]["ports"]] == [
        ("http-admin", 9090, "http-admin")
    ], what
    # The container listens on the admin port only, with the webhook off.
    dep, c = deployment_container(objs)
    pod = dep["spec"]["template"]["spec"]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("http-admin", 9090)], what
    assert not any(p.get("hostPort") for p in c["ports"]), what
    assert not pod.get("hostNetwork"), what
    assert not any(a.startswith("--listen=") for a in c["args"]), what
    assert "--admin-listen=0.0.0.0:9090" in c["args"], what
    cfg = config_of(objs)
    assert cfg["SSM_RESYNC_WEBHOOK"] == "off", what
    assert re.fullmatch(r"https://sqs\.[a-z0-9-]+\.amazonaws\.com/\d{12}/[A-Za-z0-9_-]+", cfg["SSM_RESYNC_SQS_QUEUE_URL"]), what
    assert cfg["SSM_RESYNC_TOPIC_ARN"].startswith("arn:aws:sns:"), what
    # The signed path: unsigned EventBridge events stay refused unless asked for.
    assert cfg.get("SSM_RESYNC_SQS_ACCEPT_EVENTBRIDGE", "false") == "false", what
    # One NetworkPolicy, selecting the pods: ingress only to the admin port, only from the
    # monitoring namespace; egress DNS and HTTPS as in the other overlays.
    (np,) = kinds_of(objs, "NetworkPolicy")
    spec = np["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items(), what
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}, what
    assert spec["ingress"] == [{"from": MONITORING_ONLY, "ports": [{"port": 9090, "protocol": "TCP"}]}], what
    egress_ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}, what
    # Prometheus still scrapes the admin Service; IRSA still gives the pod its role.
    for sm in kinds_of(objs, "ServiceMonitor"):
        assert sm["spec"]["selector"]["matchLabels"].items() <= admin["metadata"]["labels"].items(), what
    (sa,) = kinds_of(objs, "ServiceAccount")
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/.+", sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]), what


def check_webhook(objs, what: str, ingress: bool):
    """What the webhook renders, as before the queue path: both ports, the webhook Service,
    no queue configuration."""
    dep, c = deployment_container(objs)
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("http-webhook", 8080), ("http-admin", 9090)], what
    assert "--listen=0.0.0.0:8080" in c["args"], what
    webhook = [svc for svc in kinds_of(objs, "Service") if svc["metadata"]["name"] == dep["metadata"]["name"]]
    assert [(p["name"], p["port"]) for (svc,) in [webhook] for p in svc["spec"]["ports"]] == [("http-webhook", 8080)], what
    assert not QUEUE_KEYS & set(config_of(objs)), what
    assert bool(kinds_of(objs, "Ingress")) == ingress, what


def test_private_overlay_exposes_only_the_admin_port_to_monitoring():
    objs = render(PRIVATE_OVERLAY)
    check_private(objs, PRIVATE_OVERLAY)
    # The monitoring objects come along (alerts for the queue path included).
    assert kinds_of(objs, "PrometheusRule") and kinds_of(objs, "ServiceMonitor")
    assert one(PRIVATE_OVERLAY, "PodDisruptionBudget", "ssm-resync")["spec"]["minAvailable"] == 1


def test_private_overlay_is_the_eks_overlay_minus_the_way_in():
    """Everything but what exposes the webhook is as in overlays/eks: a change there must be
    made here too."""
    def key(o):
        return (o["kind"], o["metadata"]["name"])

    eks = {key(o): o for o in render("overlays/eks")}
    private = {key(o): o for o in render(PRIVATE_OVERLAY)}
    gone = {k for k in eks if k not in private}
    assert {k[0] for k in gone} == {"Ingress", "Service", "NetworkPolicy", "ConfigMap"}, gone
    assert ("Service", "ssm-resync") in gone and ("NetworkPolicy", "ssm-resync-from-alb") in gone
    for k, o in private.items():
        if k[0] in ("Deployment", "ConfigMap"):
            continue
        assert o == eks.get(k), k
    # The Deployment differs in the webhook port, --listen and the ConfigMap's hashed name.
    _, c_eks = deployment_container(eks.values())
    _, c_private = deployment_container(private.values())
    assert [a for a in c_eks["args"] if not a.startswith("--listen=")] == c_private["args"]
    assert [p for p in c_eks["ports"] if p["name"] != "http-webhook"] == c_private["ports"]
    assert c_eks["resources"] == c_private["resources"]
    assert c_eks["securityContext"] == c_private["securityContext"]
    cfg_eks, cfg_private = config_of(eks.values()), config_of(private.values())
    assert {k: v for k, v in cfg_private.items() if k not in QUEUE_KEYS} == cfg_eks


@pytest.mark.parametrize("overlay", WEBHOOK_OVERLAYS)
def test_webhook_overlays_render_as_before(overlay):
    check_webhook(render(overlay), overlay, ingress=overlay == "overlays/eks")


def test_chart_queue_values_expose_only_the_admin_port_to_monitoring():
    objs = helm_render("ci/queue-values.yaml")
    check_private(objs, "helm ci/queue-values.yaml")
    cfg = config_of(objs)
    assert cfg["SSM_RESYNC_SQS_RECEIVERS"] == "2"
    assert cfg["SSM_RESYNC_SQS_VISIBILITY_TIMEOUT"] == "45s"
    # Whatever the ingress and ALB values say (here their defaults), nothing routes in.
    assert not kinds_of(helm_render("ci/queue-values.yaml", "ingress.enabled=true"), "Ingress")


@pytest.mark.parametrize("values", ["", "ci/eks-values.yaml", "ci/minimal-values.yaml"])
def test_chart_webhook_values_render_as_before(values):
    objs = helm_render(values)
    check_webhook(objs, f"helm {values or 'default'}", ingress=values != "ci/minimal-values.yaml")
    if values != "ci/minimal-values.yaml":
        assert [o["metadata"]["name"] for o in kinds_of(objs, "NetworkPolicy")] == ["ssm-resync", "ssm-resync-from-alb"]


def test_chart_both_keeps_the_webhook_and_adds_the_consumer():
    objs = helm_render("", "delivery=both", "sqs.queueUrls={https://sqs.eu-west-1.amazonaws.com/123456789012/ssm-resync-queue}")
    dep, c = deployment_container(objs)
    assert [p["name"] for p in c["ports"]] == ["http-webhook", "http-admin"]
    assert kinds_of(objs, "Ingress")
    cfg = config_of(objs)
    assert "SSM_RESYNC_WEBHOOK" not in cfg
    assert cfg["SSM_RESYNC_SQS_QUEUE_URL"] == "https://sqs.eu-west-1.amazonaws.com/123456789012/ssm-resync-queue"


def test_checkov_skips_carry_a_reason():
    for overlay in OVERLAYS:
        for o in render(overlay):
            for k, v in (o["metadata"].get("annotations") or {}).items():
                if k.startswith("checkov.io/skip"):
                    assert re.fullmatch(r"CKV2?_K8S_\d+=.{30,}", v), (k, v)


# --- monitoring -----------------------------------------------------------------------

def rules_groups() -> dict:
    return yaml.safe_load((K8S / "monitoring" / "rules.yaml").read_text())


def test_prometheusrule_is_rules_yaml():
    (pr,) = objects("overlays/eks", "PrometheusRule")
    assert pr["spec"] == rules_groups(), "regenerate: python3 tests/deploy/gen_prometheusrule.py"
    raw = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())
    assert raw["spec"] == rules_groups()


def anchors_of(doc: str) -> set[str]:
    text = (REPO / "docs" / doc).read_text()
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_alert_has_a_runbook_section_and_a_unit_test():
    groups = {g["name"]: g["rules"] for g in rules_groups()["groups"]}
    assert {r["alert"] for r in groups["ssm-resync-queue"]} == QUEUE_ALERTS
    rules = [r for g in groups.values() for r in g]
    assert {r["alert"] for r in rules} == ALERTS | QUEUE_ALERTS
    anchors = anchors_of("runbook.md")
    tests = yaml.safe_load((K8S / "monitoring" / "rules_test.yaml").read_text())
    cases = {}
    for t in tests["tests"]:
        for c in t.get("alert_rule_test", []):
            cases.setdefault(c["alertname"], []).append(bool(c["exp_alerts"]))
    for r in rules:
        name = r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        for key in ("summary", "description", "runbook_url"):
            assert r["annotations"].get(key), (name, key)
        url = r["annotations"]["runbook_url"]
        assert url.endswith("docs/runbook.md#" + name.lower()), url
        assert name.lower() in anchors, f"docs/runbook.md has no section {name}"
        assert True in cases.get(name, []) and False in cases.get(name, []), f"{name}: needs a firing and a quiet test"


def test_queue_alerts_read_only_queue_series_and_page_on_deliveries():
    """The queue alerts fire only where a queue is consumed (their series exist nowhere
    else), and none of them counts what anyone may put on the queue (rejections)."""
    (group,) = [g for g in rules_groups()["groups"] if g["name"] == "ssm-resync-queue"]
    for r in group["rules"]:
        names = set(re.findall(r"\b(ssm_resync_[a-z0-9_]+)", r["expr"]))
        assert names and all(n.startswith("ssm_resync_queue_") for n in names), (r["alert"], names)
        assert "rejected" not in r["expr"] and "rejections" not in r["expr"], r["alert"]
    severities = {r["alert"]: r["labels"]["severity"] for r in group["rules"]}
    assert severities == {
        "SSMResyncQueueStuck": "critical",
        "SSMResyncQueueReceiveFailing": "critical",
        "SSMResyncQueueNotReceiving": "critical",
        "SSMResyncQueueLagHigh": "warning",
    }
    # A queue-only service must not look silent to the 24-hour alert.
    (silent,) = [r for g in rules_groups()["groups"] for r in g["rules"] if r["alert"] == "SSMResyncNoNotifications"]
    assert "ssm_resync_queue_messages_total" in silent["expr"]


# Anyone may send the public webhook messages that are refused before (or while) their
# signature is checked; these series count them (or the certificate fetches they cause).
OUTSIDER_SERIES = {"ssm_resync_rejections_total", "ssm_resync_cert_fetches_total", "ssm_resync_shed_total",
                   "ssm_resync_accept_paused_total", "ssm_resync_request_duration_seconds_bucket"}


def test_no_alert_an_outsider_can_fire_pages():
    """A page (warning, critical) reads only what verified messages, the cluster and AWS
    drive; what anyone can send feeds info alerts only (rules_test.yaml: "an outsider storm
    pages nobody"). The one exception is event_malformed, a verified message's reason."""
    for g in rules_groups()["groups"]:
        for r in g["rules"]:
            names = set(re.findall(r"\b(ssm_resync_[a-z0-9_]+)", r["expr"]))
            if r["labels"]["severity"] == "info":
                continue
            outsider = names & OUTSIDER_SERIES
            if outsider == {"ssm_resync_rejections_total"}:
                assert 'reason="event_malformed"' in r["expr"], r["alert"]
                continue
            assert not outsider, (r["alert"], outsider)
            # Rejected Notifications are counted by the type their (unverified) header names.
            assert 'result="rejected"' not in r["expr"], r["alert"]
    severities = {r["alert"]: r["labels"]["severity"] for g in rules_groups()["groups"] for r in g["rules"]}
    assert severities["SSMResyncRejectionsRising"] == severities["SSMResyncCertFetchFailures"] == "info"


def test_chart_rules_are_a_copy_of_k8s_monitoring():
    for name in ("rules.yaml", "dashboard.json"):
        chart = (REPO / "charts" / "ssm-resync" / "files" / name).read_bytes()
        assert chart == (K8S / "monitoring" / name).read_bytes(), f"cp k8s/monitoring/{name} charts/ssm-resync/files/"


def test_dashboard_uses_only_ssm_resync_metrics_and_quantiles():
    dash = json.loads((K8S / "monitoring" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    names = set()
    for e in exprs:
        found = re.findall(r"\b(ssm_resync_[a-z0-9_]+)", e)
        assert found, e
        names.update(found)
    for metric in ("patch_duration_seconds", "end_to_end_seconds"):
        for q in ("0.5", "0.99"):
            assert any(f"histogram_quantile({q}" in e and f"ssm_resync_{metric}_bucket" in e for e in exprs), (metric, q)
    for needed in (
        "ssm_resync_notifications_total", "ssm_resync_rejections_total", "ssm_resync_patches_total",
        "ssm_resync_index_objects", "ssm_resync_watch_last_event_age_seconds", "ssm_resync_watch_restarts_total",
        "ssm_resync_cert_fetches_total",
    ):
        assert needed in names, needed
    cms = [o for o in objects("overlays/eks", "ConfigMap") if o["metadata"]["name"] == "ssm-resync-dashboard"]
    assert json.loads(cms[0]["data"]["dashboard.json"]) == dash
