"""``python -m potforge`` runs the command line."""

from potforge.cli import main

main()
