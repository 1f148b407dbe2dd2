"""``python -m ddpm_lib``: see ddpm_lib.cli."""
import sys

from .cli import main

sys.exit(main())
