"""`python3 -m ckptd ...` is the `ckptd-client` command line."""

import sys

from .cli import main

sys.exit(main())
