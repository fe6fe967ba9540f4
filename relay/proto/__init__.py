"""The wire formats, sans-I/O and stdlib only: bytes in, values out, and back.

* :mod:`.stun`: STUN messages (RFC 8489): header, attributes and their value codecs,
  integrity, fingerprint.
* :mod:`.turn`: TURN methods, attributes and their value codecs, error codes, timers
  (RFC 8656).
* :mod:`.channeldata`: ChannelData messages (RFC 8656 §12.4, §12.5), and the header helpers
  the packet path parses and frames with.
* :mod:`.indication`: Data indications (RFC 8656 §11.3) written in place, for the packet path.
* :mod:`.framing`: a TURN-over-TCP stream split into STUN and ChannelData frames.
"""
