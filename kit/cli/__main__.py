import sys

from kit.cli.application import main

sys.exit(main())
