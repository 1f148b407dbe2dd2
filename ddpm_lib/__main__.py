"""``python -m ddpm_lib``: see ddpm_lib.cli."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:                                                  # Ctrl-C while starting up
    sys.stderr.write("error: interrupted (SIGINT) while starting; nothing was written\n")
    sys.exit(130)

sys.exit(main())
