"""``python -m ddpm_lib.book grade``: see ddpm_lib.book.cli."""
import sys

from .cli import main

sys.exit(main())
