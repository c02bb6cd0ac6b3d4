"""kube-proxy's iptables mode: chain names, the restore payload, the kernel adapter."""
