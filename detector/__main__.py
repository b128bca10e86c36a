"""``python -m detector`` is the same as the ``tiktok-detector`` command."""

import sys

from detector.cli import main

sys.exit(main())
