"""`python -m tether`."""

from tether.cli import main

main()
