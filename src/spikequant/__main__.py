"""``python -m spikequant`` (and ``torchrun -m spikequant train RECIPE``): the command line."""

import sys

from .cli import main

sys.exit(main())
