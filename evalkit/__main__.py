"""``python -m evalkit`` (and ``torchrun -m evalkit``, ``accelerate launch -m evalkit``): the CLI."""

from evalkit.cli import main

main()
