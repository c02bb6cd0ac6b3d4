"""kube-netlab: a Kubernetes service-networking data plane on the real Linux kernel."""

__version__ = "0.1.0"
