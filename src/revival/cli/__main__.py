"""`python -m revival.cli ...` runs the `revival` command."""
import sys

from . import main

sys.exit(main())
