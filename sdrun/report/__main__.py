"""`python -m sdrun.report PATH...`, the same as `sdrun-report PATH...`."""

import sys

from sdrun.report.cli import main

sys.exit(main())
