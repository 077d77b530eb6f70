"""``python -m producer``: the same as the ``phonet-producer`` command."""

from producer.cli.main import main

raise SystemExit(main())
