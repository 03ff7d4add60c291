"""``python -m credrefresh``: the same as the ``credrefresh`` console script."""

from credrefresh.cli import main

raise SystemExit(main())
