"""``python -m destination``: the ``destination`` command."""

from destination.cli.command import main

raise SystemExit(main())
