"""Entry point of ``python -m tasks``."""

from tasks._cli import main

main()
