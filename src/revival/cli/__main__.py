"""`python -m revival.cli ...` runs the `revival` command."""
import sys

from revival.cli import main

sys.exit(main())
