#!/usr/bin/env python3
"""Checks deploy/k8s/ (issue 9) without a Kubernetes cluster: the manifests parse (Debian's
python3-yaml), and what a cluster would only reveal at run time holds:
  - every StatefulSet has a headless Service (serviceName) that publishes not-ready addresses and
    selects exactly its pods; podManagementPolicy is Parallel (a node is ready only with all peers);
  - the API Service selects the router pods and serves the default ports of
    actors/config/cluster_config.hpp (RPC 7433, HTTP 8000), which the ConfigMap's [api] uses too;
  - every container has liveness and readiness httpGet probes on ports it declares; the router's
    readiness is /health on its HTTP port; Prometheus scrape annotations name the metrics port;
  - the ConfigMap's cluster TOML names exactly the StatefulSets' pods as nodes, with hosts under
    their headless Service and the container ports; worker pods request nvidia.com/gpu.
Prints one line per check group; exits 1 naming the first problem, 77 when yaml is missing."""
import glob
import os
import re
import sys
import tomllib

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed (deploy/install-deps.sh installs it)")
    sys.exit(77)

ROOT = os.environ.get("SY_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
K8S = os.path.join(ROOT, "deploy", "k8s")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def defaults():
    """The API ports the C++ config defaults to (ApiConfig in cluster_config.hpp)."""
    text = open(os.path.join(ROOT, "actors", "config", "cluster_config.hpp")).read()
    found = dict(re.findall(r'Endpoint (rpc|http)\{"[0-9.]+", (\d+)\}', text))
    check(set(found) == {"rpc", "http"}, f"cannot find the rpc/http defaults in cluster_config.hpp: {found}")
    return {k: int(v) for k, v in found.items()}


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def main():
    docs = []
    files = sorted(glob.glob(os.path.join(K8S, "*.yaml")))
    check(files, f"no manifests in {K8S}")
    for f in files:
        for d in yaml.safe_load_all(open(f)):
            if d is not None:
                d["_file"] = os.path.basename(f)
                docs.append(d)
    kinds = lambda k: [d for d in docs if d.get("kind") == k]
    kust = kinds("Kustomization")
    check(len(kust) == 1, "one kustomization.yaml")
    listed = set(kust[0]["resources"])
    on_disk = {os.path.basename(f) for f in files} - {"kustomization.yaml"}
    check(listed == on_disk, f"kustomization resources {sorted(listed)} != manifests {sorted(on_disk)}")
    print(f"parsed {len(docs)} documents from {len(files)} files")

    sets = {d["metadata"]["name"]: d for d in kinds("StatefulSet")}
    services = {d["metadata"]["name"]: d for d in kinds("Service")}
    maps = {d["metadata"]["name"]: d for d in kinds("ConfigMap")}
    check(sets, "no StatefulSet")
    api_ports = defaults()

    # The cluster TOML.
    check(len(maps) == 1, f"expected one ConfigMap, got {list(maps)}")
    cm_name, cm = next(iter(maps.items()))
    cluster = tomllib.loads(cm["data"]["cluster.toml"])
    nodes = {n["name"]: n for n in cluster["node"]}
    for key, port in api_ports.items():
        host_port = cluster["api"][key]
        check(host_port == f"0.0.0.0:{port}", f"[api] {key} = {host_port}: expected every interface and the default port {port}")

    pods = {}
    for name, s in sets.items():
        spec = s["spec"]
        where = f"StatefulSet {name} ({s['_file']})"
        sel = spec["selector"]["matchLabels"]
        tmpl = spec["template"]
        check(selects(sel, tmpl["metadata"]["labels"]), f"{where}: template labels do not match its selector")
        check(spec.get("podManagementPolicy") == "Parallel", f"{where}: podManagementPolicy must be Parallel")
        # Its headless Service.
        svc = services.get(spec["serviceName"])
        check(svc is not None, f"{where}: serviceName {spec['serviceName']} has no Service")
        check(svc["spec"].get("clusterIP") == "None", f"Service {svc['metadata']['name']} must be headless")
        check(svc["spec"].get("publishNotReadyAddresses") is True,
              f"Service {svc['metadata']['name']}: publishNotReadyAddresses (peers resolve before ready)")
        check(svc["spec"]["selector"] == sel, f"Service {svc['metadata']['name']} selector {svc['spec']['selector']} != {where} {sel}")
        for other, t in sets.items():
            if other != name:
                check(not selects(svc["spec"]["selector"], t["spec"]["template"]["metadata"]["labels"]),
                      f"Service {svc['metadata']['name']} also selects the pods of {other}")
        # Scrape annotations, ports, probes, resources.
        ann = tmpl["metadata"].get("annotations", {})
        check(ann.get("prometheus.io/scrape") == "true", f"{where}: no prometheus.io/scrape annotation")
        (c,) = tmpl["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        check(ann.get("prometheus.io/port") == str(ports.get("metrics")), f"{where}: prometheus.io/port is not the metrics port")
        check(ann.get("prometheus.io/path") == "/metrics", f"{where}: prometheus.io/path")
        svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
        for pname in ("transport", "metrics"):
            check(pname in ports and svc_ports.get(pname, {}).get("port") == ports[pname],
                  f"{where}: {pname} port differs between container and Service")
        for probe in ("livenessProbe", "readinessProbe"):
            p = c.get(probe)
            check(p is not None and "httpGet" in p, f"{where}: no {probe} httpGet")
            check(p["httpGet"]["port"] in ports, f"{where}: {probe} port {p['httpGet']['port']} is not a container port")
        check("--node-from-env" in c["args"], f"{where}: the container does not pick its node from the environment")
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in tmpl["spec"]["volumes"]}
        config_path = c["args"][c["args"].index("--config") + 1]
        check(vols[next(n for n, m in mounts.items() if config_path.startswith(m + "/"))].get("configMap", {}).get("name") == cm_name,
              f"{where}: --config {config_path} is not on the ConfigMap {cm_name}")
        check(cluster["model"]["path"].startswith(mounts.get("models", "?") + "/"), f"{where}: the model path is not on the models volume")
        roles = set()
        for i in range(spec["replicas"]):
            pod = f"{name}-{i}"
            check(pod in nodes, f"{where}: pod {pod} has no [[node]] in the ConfigMap")
            n = nodes[pod]
            check(n["host"] in ("{name}." + spec["serviceName"], f"{pod}.{spec['serviceName']}"),
                  f"node {pod}: host {n['host']} is not its DNS name under {spec['serviceName']}")
            check(n["transport_port"] == ports["transport"] and n["metrics_port"] == ports["metrics"],
                  f"node {pod}: ports differ from the container's")
            roles |= set(n["roles"])
            pods[pod] = name
        res = c["resources"]
        if "router" in roles:
            check(set(ports) >= {"rpc", "http"}, f"{where}: router pods must expose rpc and http")
            check(ports["rpc"] == api_ports["rpc"] and ports["http"] == api_ports["http"], f"{where}: API ports are not the defaults")
            rp = c["readinessProbe"]["httpGet"]
            check(rp["path"] == "/health" and rp["port"] == "http", f"{where}: the router's readiness must be /health on http")
        else:
            for kind in ("requests", "limits"):
                check(res.get(kind, {}).get("nvidia.com/gpu", 0) >= 1, f"{where}: no nvidia.com/gpu in {kind}")
        check("cpu" in res["requests"] and "memory" in res["requests"], f"{where}: cpu/memory requests")
    extra = set(nodes) - set(pods)
    check(not extra, f"ConfigMap nodes without a pod: {sorted(extra)}")
    print(f"{len(sets)} StatefulSets, {len(pods)} pods = the ConfigMap's {len(nodes)} nodes; headless Services, "
          "selectors, probes, scrape annotations, GPU requests consistent")

    # The API Service.
    api = [s for s in services.values() if s["spec"].get("clusterIP") != "None"]
    check(len(api) == 1, f"expected one API Service, got {[s['metadata']['name'] for s in api]}")
    api = api[0]
    routers = [n for n, s in sets.items() if selects(api["spec"]["selector"], s["spec"]["template"]["metadata"]["labels"])]
    check(len(routers) == 1 and "router" in nodes[f"{routers[0]}-0"]["roles"], f"API Service selects {routers}, not the router")
    by_name = {p["name"]: p for p in api["spec"]["ports"]}
    for key, port in api_ports.items():
        check(by_name.get(key, {}).get("port") == port and by_name[key].get("targetPort") == key,
              f"API Service port {key} is not {port} -> the router's {key} port")
    print(f"API Service {api['metadata']['name']}: rpc {api_ports['rpc']}, http {api_ports['http']} -> {routers[0]}")
    print("k8s manifests test passed")


main()
