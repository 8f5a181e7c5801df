"""`python -m sg2ada` is the `sg2ada` command."""

import sys

from sg2ada.cli.main import main

sys.exit(main())
