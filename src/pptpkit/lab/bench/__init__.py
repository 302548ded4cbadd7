"""``pptpkit bench``: throughput, setup and scale benchmarks in private network namespaces.

:mod:`.runner` has the three benchmarks (``run_throughput``, ``run_setup``, ``run_scale``),
:mod:`.agent` the measured server/client processes, :mod:`.flow` the TCP sender/receiver,
:mod:`.relay` the pptp-linux/pptpd anchor, :mod:`.report` the table/JSON output.
"""
