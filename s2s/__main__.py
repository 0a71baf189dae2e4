"""``python -m s2s`` is the ``s2s`` command."""

import sys

from s2s.cli import main

sys.exit(main())
