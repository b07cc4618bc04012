"""``python -m ditto_demo``: see :mod:`ditto_demo.cli`."""

import sys

from ditto_demo.cli import main

sys.exit(main())
