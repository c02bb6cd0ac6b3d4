"""`knetlab check svc`: the kubernetes.io "Debug Services" walk, run mechanically.

Each step is a small function that looks at the store, the kernel or real
traffic and returns an Outcome (passed, failed or skipped, with its evidence and
a hint of where to look next); `runner` runs them in order and skips a step
whose prerequisite failed, so the first failure is the one to fix. The steps
are ordered from cause to symptom (objects, then pods, then the proxy, then
traffic through the Service), which is why the first failing step pinpoints
the breakage. Entry point: `netlab.check.svc.check_service`.
"""
