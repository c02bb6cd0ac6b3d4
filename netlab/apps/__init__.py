"""Workloads inside pods: one netexec-compatible server per node serves every pod.

container.py reads a Pod spec into a ServePlan (ports, mode); netexec.py's PodServer
listens inside each pod's namespace on one asyncio loop; runner.py's PodServerThread
drives it from synchronous code (the node agent); routes.py and dial.py are the
answers and the outgoing /dial tries.
"""
