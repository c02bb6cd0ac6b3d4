"""`python -m netlab.lab --state-dir DIR`: a lab's supervisor, as `knetlab up` starts it.

Not a `knetlab` subcommand: the supervisor imports what its forks run and nothing
else (lab/components.py says why).
"""

import argparse
import os

from netlab.daemon import configure_logging
from netlab.lab.state import StateDir
from netlab.lab.supervisor import Supervisor

parser = argparse.ArgumentParser(prog="python -m netlab.lab", description=__doc__)
parser.add_argument("--state-dir", required=True, help="the lab's state dir")
path = parser.parse_args().state_dir.rstrip("/")
configure_logging("supervisor")
Supervisor(StateDir(os.path.basename(path), os.path.dirname(path))).run()
