"""Cryptography of the PPP layer.

* :mod:`pptpkit.crypto.mschap` - MS-CHAPv1 (RFC 2433) and MS-CHAPv2 (RFC 2759) primitives.
* :mod:`pptpkit.crypto.mppe` - MPPE key derivation (RFC 3079) and the packet transform (RFC 3078).
"""
