"""`python -m loomos.cli ...`: how the dev stack starts its services with this interpreter."""

from loomos.cli import main

main()
