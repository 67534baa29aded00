"""`python -m bge_client`: the `bge-embed` CLI."""

from bge_client.cli import main

raise SystemExit(main())
