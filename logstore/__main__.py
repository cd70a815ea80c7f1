import sys

from logstore.cli.main import main

sys.exit(main())
