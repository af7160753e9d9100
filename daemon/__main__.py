"""`python -m daemon` runs the gitopsd command line."""

from daemon.cli import main

raise SystemExit(main())
