"""``python -m scaler`` is ``turnscale scaler``."""

import sys

from scaler.server import main

main(sys.argv[1:])
