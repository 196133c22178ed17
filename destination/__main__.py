"""``python -m destination``: the ``destination`` command."""

from destination.cli import main

raise SystemExit(main())
