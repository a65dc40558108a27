"""`python -m embedrl ...` (used by `accelerate launch -m embedrl ...`)."""

import sys

from embedrl.cli import main

sys.exit(main())
