"""``python -m scaler`` is ``turnscale scaler``."""

import sys

from scaler.cli import main

main(["scaler", *sys.argv[1:]])
