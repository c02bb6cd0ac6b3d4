"""`python -m netlab` is the same as `knetlab`."""

from netlab.cli.main import main

main()
