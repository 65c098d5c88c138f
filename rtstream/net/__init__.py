"""Network I/O: UDP sockets for the media flows."""
