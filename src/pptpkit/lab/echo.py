"""A PPP "program" for demos and tests: echoes every async-HDLC frame it reads back to its peer.

Run as ``python -m pptpkit.lab.echo [pptpd-style arguments ...]`` in place of pppd behind
``pptpkit server --ppp-program``.  The arguments are ignored.  Frames are deframed (FCS checked)
and re-encoded, so what comes back is a proper HDLC frame even if the input was fragmented
across reads.  Exits 0 at EOF (or EIO: the pty master went away).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import termios

from pptpkit.io.pty import set_raw
from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame


def main() -> int:
    if os.isatty(0):
        # pptpd hands over a cooked pty; raw mode is needed to see the bytes unchanged.
        with contextlib.suppress(termios.error):
            set_raw(0)
    decoder = HdlcDecoder(max_frame=65535)
    while True:
        try:
            data = os.read(0, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return 0
            raise
        if not data:
            return 0
        out = b"".join(encode_frame(frame) for frame in decoder.feed(data))
        view = memoryview(out)
        while view:
            n = os.write(1, view)
            view = view[n:]


if __name__ == "__main__":
    sys.exit(main())
