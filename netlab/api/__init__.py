"""api room: Kubernetes-shaped objects as plain dicts, and everything that reads user input.

yamlsrc (YAML with line numbers), objects (manifests -> validated objects), meta,
podspec, workloads, service (per-kind rules), selectors (labels and matching),
names (name syntax), validation (the problem collector), keys (store key layout),
cluster (the settings every component receives).
"""
