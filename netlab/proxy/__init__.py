"""kube-proxy for the lab's nodes: Services and EndpointSlices in, kernel rules out.

Laid out like kubernetes/pkg/proxy: the pieces every mode shares once, the
modes beside each other.

    model.py      Service/EndpointSlice dicts -> ServicePort / Endpoint maps
    changes.py    change tracking -> Snapshot (maps + what changed since last sync)
    topology.py   which endpoints a node uses (traffic policies, terminating, hints)
    conntrack.py  stale UDP conntrack cleanup
    backend.py    what the proxier asks of a mode
    proxier.py    the sync loop: rate limiting, full/partial syncs, health, metrics
    metrics.py    kubeproxy_* metrics and the :10249 server
    healthz.py    /healthz and /livez on :10256
    rules_view.py rules + counters grouped by Service (for `knetlab proxy rules`)
    modes.py      a lab's proxy mode -> that mode's new_proxier (IPVS refused with why
                  where the kernel lacks ip_vs or dummy)
    iptables/     names, render (pure payload), kernel (iptables-legacy), backend
    nftables/     names, render (pure transaction), kernel (nft -f), backend, rules_view
    ipvs/         names, render (pure desired state), diff (pure), netlink (batched IPVS,
                  ipset and address requests), kernel, backend, rules_view

A node agent builds one with `netlab.proxy.modes.new_proxier_for(mode, ...)`.
"""
