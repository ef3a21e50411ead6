"""`python -m tui`: the `ladder` command."""

import sys

from tui.cli import main

if __name__ == "__main__":  # not when a model worker's process (started by spawn) imports this module again
    sys.exit(main())
