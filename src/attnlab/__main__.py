"""``python -m attnlab`` (what ``torchrun -m attnlab train ...`` runs)."""

from attnlab.cli import main

raise SystemExit(main())
