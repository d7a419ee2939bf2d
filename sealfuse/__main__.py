"""`python -m sealfuse` runs the CLI."""

from sealfuse.cli import main

main()
