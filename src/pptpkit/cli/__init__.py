"""The ``pptpkit`` command line: one module per command, :mod:`.main` dispatches.

Nothing below this package imports it: commands turn flags and files into typed settings and
hand them to :mod:`pptpkit.vpn`, :mod:`pptpkit.compat` and :mod:`pptpkit.lab`.
"""
