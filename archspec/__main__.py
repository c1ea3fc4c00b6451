"""``python -m archspec``."""

from archspec.cli import main

main(prog_name="archspec")
