"""`python -m hindsight` runs the `hindsight` command."""

import sys

from hindsight.cli import main

sys.exit(main())
