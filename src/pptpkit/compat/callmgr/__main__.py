"""``python -m pptpkit.compat.callmgr``: how a member starts the manager process
(see :func:`~pptpkit.compat.callmgr.rendezvous.manager_argv`)."""

import sys

from pptpkit.compat.callmgr.manager import main

sys.exit(main())
