"""kube-proxy's IPVS mode: names, desired state, the diff, netlink codecs, kernel adapter."""
