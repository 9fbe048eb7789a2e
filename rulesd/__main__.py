"""`python -m rulesd` is the same as the `rulesd` command."""

import sys

from rulesd.cli import main

sys.exit(main())
