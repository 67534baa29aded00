import sys

from bge_export.cli import main

sys.exit(main())
