"""`python -m lsp_server` runs the `hindsight` command."""

import sys

from .cli import main

sys.exit(main())
