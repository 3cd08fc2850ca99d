"""Structural checks of deploy/kubernetes/ for tests/deploy.rs.

Usage: deploy_check.py KUBERNETES_DIR TOML_OUT

Parses every *.yaml file with PyYAML (Debian's python3-yaml, so run it with /usr/bin/python3),
checks each document's kind and apiVersion, and checks that the manifests agree with each
other and with ringrelay: selectors match the pod labels, probes reach the admin port that
--metrics-listen opens, preStop and the grace period cover the drain, the pod runs as
non-root on a read-only root, the Service and the PodMonitor name ports the container has,
and the ConfigMap's TOML is mounted where --config reads it. Writes that TOML to TOML_OUT
and prints the container's args as `args JSON` (the Rust test starts ringrelay with both).
Prints "ok N documents" and exits 0, or prints every problem and exits 1.
"""

import json
import os
import sys

import yaml

EXPECTED = {
    "ConfigMap": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "PodDisruptionBudget": "policy/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)
    return cond


def arg_value(args, flag):
    """The value after `flag` in a container's args, or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return str(args[i + 1])
        if isinstance(a, str) and a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main():
    kdir, toml_out = sys.argv[1], sys.argv[2]
    files = sorted(f for f in os.listdir(kdir) if f.endswith((".yaml", ".yml")))
    docs = {}
    per_file = {}
    for name in files:
        with open(os.path.join(kdir, name)) as f:
            loaded = [d for d in yaml.safe_load_all(f) if d is not None]
        per_file[name] = loaded
        for d in loaded:
            kind = d.get("kind")
            if not check(kind in EXPECTED, f"{name}: unexpected kind {kind!r}"):
                continue
            check(
                d.get("apiVersion") == EXPECTED[kind],
                f"{name}: {kind} has apiVersion {d.get('apiVersion')!r}, "
                f"expected {EXPECTED[kind]!r}",
            )
            check(kind not in docs, f"{name}: a second {kind}")
            docs[kind] = d
    for kind in EXPECTED:
        check(kind in docs, f"no {kind} in {kdir}")
    if problems:
        return finish(0)

    # kustomization.yaml lists every other manifest.
    kust = docs["Kustomization"]
    others = {n for n in files if all(d.get("kind") != "Kustomization" for d in per_file[n])}
    check(
        set(kust.get("resources", [])) == others,
        f"kustomization resources {kust.get('resources')} != files {sorted(others)}",
    )

    dep = docs["Deployment"]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(
        selects(spec["selector"]["matchLabels"], labels),
        "Deployment selector does not match its pod labels",
    )
    check(spec.get("replicas", 1) >= 2, "fewer than 2 replicas")
    check(
        spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0,
        "rolling updates may take a pod away before its replacement is ready",
    )
    (c,) = pod["containers"]
    args = [str(a) for a in c.get("args", [])]
    check(args[:1] == ["proxy"], f"args do not start with the proxy mode: {args}")
    check("--proxy-protocol" in args, "args lack --proxy-protocol")
    metrics_listen = arg_value(args, "--metrics-listen")
    check(metrics_listen == "0.0.0.0:9465", f"--metrics-listen is {metrics_listen!r}")
    listen = arg_value(args, "--listen")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(
        listen is not None and ports.get("smtp") == int(listen.rsplit(":", 1)[1]),
        f"--listen {listen!r} is not the smtp container port {ports.get('smtp')}",
    )
    check(
        metrics_listen is not None
        and ports.get("metrics") == int(metrics_listen.rsplit(":", 1)[1]),
        "--metrics-listen is not the metrics container port",
    )

    def probe_port(probe):
        p = probe["httpGet"]["port"]
        return ports.get(p) if isinstance(p, str) else p

    rp, lp = c.get("readinessProbe"), c.get("livenessProbe")
    if check(rp and "httpGet" in rp, "no HTTP readinessProbe"):
        check(rp["httpGet"]["path"] == "/readyz", "readinessProbe is not /readyz")
        check(probe_port(rp) == 9465, "readinessProbe is not on the admin port")
    if check(lp and "httpGet" in lp, "no HTTP livenessProbe"):
        check(lp["httpGet"]["path"] == "/healthz", "livenessProbe is not /healthz")
        check(probe_port(lp) == 9465, "livenessProbe is not on the admin port")

    # Shutdown: preStop sleep == --drain-delay; the grace period covers all of it.
    drain_delay = int(arg_value(args, "--drain-delay") or 0)
    drain_timeout = int(arg_value(args, "--drain-timeout") or 30)
    cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    check(
        len(cmd) == 2 and cmd[0].endswith("sleep"),
        f"preStop is not a sleep: {cmd}",
    )
    pre_stop = int(cmd[-1]) if cmd and str(cmd[-1]).isdigit() else -1
    check(drain_delay > 0, "no --drain-delay")
    check(
        pre_stop == drain_delay,
        f"preStop sleeps {pre_stop} s, --drain-delay is {drain_delay} s",
    )
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(
        grace > pre_stop + drain_delay + drain_timeout,
        f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain delay "
        f"{drain_delay} + drain timeout {drain_timeout}",
    )

    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            check(r in res.get(part, {}), f"resources.{part}.{r} missing")

    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = [
        t.get("podAffinityTerm", t)
        for key in (
            "preferredDuringSchedulingIgnoredDuringExecution",
            "requiredDuringSchedulingIgnoredDuringExecution",
        )
        for t in anti.get(key, [])
    ]
    check(
        any(
            t.get("topologyKey")
            and selects(t.get("labelSelector", {}).get("matchLabels"), labels)
            for t in terms
        ),
        "no podAntiAffinity term that selects the pods",
    )

    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(
        psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), "runAsNonRoot is not set"
    )
    check(
        (csc.get("runAsUser") or psc.get("runAsUser") or 0) != 0,
        "no non-zero runAsUser",
    )
    check(csc.get("readOnlyRootFilesystem") is True, "root filesystem is writable")
    check(
        csc.get("allowPrivilegeEscalation") is False, "privilege escalation is allowed"
    )
    check(
        csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not dropped"
    )

    # The ConfigMap is mounted where --config reads it.
    cm = docs["ConfigMap"]
    config = arg_value(args, "--config") or ""
    mount_dir, key = os.path.split(config)
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = [
        m
        for m in c.get("volumeMounts", [])
        if m["mountPath"].rstrip("/") == mount_dir
        and vols.get(m["name"], {}).get("configMap", {}).get("name")
        == cm["metadata"]["name"]
    ]
    check(mounted, f"--config {config!r} is not in a mount of ConfigMap ringrelay")
    toml = cm.get("data", {}).get(key)
    if check(toml, f"ConfigMap has no key {key!r}"):
        with open(toml_out, "w") as f:
            f.write(toml)

    svc = docs["Service"]["spec"]
    check(svc.get("externalTrafficPolicy") == "Local", "externalTrafficPolicy is not Local")
    check(selects(svc.get("selector"), labels), "Service selector does not match the pods")
    for p in svc.get("ports", []):
        t = p.get("targetPort")
        check(
            (ports.get(t) if isinstance(t, str) else t) == ports.get("smtp"),
            f"Service port {p} does not reach the smtp port",
        )

    pdb = docs["PodDisruptionBudget"]["spec"]
    check(
        selects(pdb["selector"]["matchLabels"], labels), "PDB selector does not match"
    )
    check(
        "maxUnavailable" in pdb or "minAvailable" in pdb,
        "PDB has neither maxUnavailable nor minAvailable",
    )

    pm = docs["PodMonitor"]["spec"]
    check(selects(pm["selector"]["matchLabels"], labels), "PodMonitor selects no pod")
    eps = pm.get("podMetricsEndpoints", [])
    check(
        eps and all(e.get("port") in ports and e.get("path", "/metrics") == "/metrics"
                    for e in eps),
        f"PodMonitor endpoints {eps} do not name the metrics port",
    )
    if not problems:
        # The Rust test starts ringrelay with exactly these arguments (addresses moved).
        print("args " + json.dumps(args))
    return finish(sum(len(v) for v in per_file.values()))


def finish(n):
    if problems:
        for p in problems:
            print("PROBLEM:", p)
        return 1
    print(f"ok {n} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
