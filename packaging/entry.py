"""Entry script for the frozen `gitopsd` executable: the same command line as `python -m daemon`."""

from daemon.cli import main

raise SystemExit(main())
