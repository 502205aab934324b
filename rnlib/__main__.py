"""``python -m rnlib``: the command line (``rnlib.batch.cli``)."""

import sys

from rnlib.batch.cli import main

if __name__ == "__main__":
    sys.exit(main())
