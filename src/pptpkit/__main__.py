"""``python -m pptpkit``: the same as the ``pptpkit`` console script."""

from __future__ import annotations

import sys

from pptpkit.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
