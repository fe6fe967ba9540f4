"""``python -m relay`` is ``turnscale relay``."""

import sys

from relay.cli import main

main(sys.argv[1:])
