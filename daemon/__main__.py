"""``python -m daemon``: the same as the ``credrefresh`` console script."""

from daemon.cli import main

raise SystemExit(main())
