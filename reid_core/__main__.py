"""`python -m reid_core <verb>`: see reid_core/cli.py."""

import sys

from .cli import main

sys.exit(main())
