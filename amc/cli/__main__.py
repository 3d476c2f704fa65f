"""``python -m amc.cli ...`` (e.g. under ``torchrun``): the same as the ``amc`` console script."""

import sys

from amc.cli import main

sys.exit(main())
