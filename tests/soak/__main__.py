"""``python -m tests.soak``: see :mod:`tests.soak.month`."""

from __future__ import annotations

import sys

from tests.soak.month import main

sys.exit(main())
