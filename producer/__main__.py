"""``python -m producer``: the same as the ``phonet-producer`` command."""

from producer.cli import main

raise SystemExit(main())
