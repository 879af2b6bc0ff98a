import sys

from relaxjax.train.cli import main

sys.exit(main())
