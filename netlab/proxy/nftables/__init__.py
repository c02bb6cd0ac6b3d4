"""kube-proxy's nftables mode: object names, the `nft -f` transaction, the kernel adapter."""
