"""`python -m kdkeras`: the same as the `kdkeras` command."""

import sys

from kdkeras.cli import main

sys.exit(main())
