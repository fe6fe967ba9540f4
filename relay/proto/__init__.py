"""The wire formats, sans-I/O and stdlib only: bytes in, values out, and back.

* :mod:`.stun`: STUN messages (RFC 8489): header, attributes, integrity, fingerprint.
* :mod:`.turn`: TURN methods, attributes, error codes and timers (RFC 8656).
* :mod:`.channeldata`: ChannelData messages (RFC 8656 §12.4, §12.5).
* :mod:`.framing`: a TURN-over-TCP stream split into STUN and ChannelData frames.
"""
