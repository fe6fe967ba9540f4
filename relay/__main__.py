"""``python -m relay`` is ``turnscale relay``."""

import sys

from scaler.cli import main

main(["relay", *sys.argv[1:]])
