import sys

from rtstream.cli import main

sys.exit(main())
