import sys

from relaxjax.cli import main

sys.exit(main())
