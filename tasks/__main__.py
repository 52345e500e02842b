"""Entry point of ``python -m tasks``."""

from tasks.engine.cli import main

main()
