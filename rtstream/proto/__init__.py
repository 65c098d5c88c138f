"""Sans-I/O wire formats: RTP, RFC 8285/NMOS extensions, ST 2110-20/-30, SDP, PS3.22 grains.

Nothing in this package reads a clock, opens a socket or imports asyncio, av,
pynetdicom or aiortc; time is always passed in as ``now``.
"""
