"""Cluster DNS: the Kubernetes DNS spec as CoreDNS's kubernetes plugin serves it.

    objects.py   Kubernetes dicts -> the frozen records DNS keeps; endpoint labels
    records.py   Services/EndpointSlices/Pods/Namespaces -> an index of DNS names
    resolver.py  one question -> rcode and sections (NXDOMAIN vs NODATA, SRV, PTR...)
    wire.py      query bytes -> reply bytes: cached fast path, truncation, bad input
    forward.py   upstreams for names outside the cluster zone (off by default)
    server.py    UDP+TCP on :53 over pre-made sockets; lifecycle
    metrics.py   coredns_* Prometheus metrics, per-server registry
    probes.py    /metrics :9153, /health :8080, /ready :8181
"""
