"""The wire formats, sans-I/O and stdlib only: bytes in, values out, and back.

- :mod:`relay.proto.stun`: STUN messages and attribute value codecs (RFC 8489).
- :mod:`relay.proto.turn`: TURN methods, attributes and codecs, error codes, timers (RFC 8656).
- :mod:`relay.proto.channeldata`: ChannelData (RFC 8656 §12.4) and the packet path's header helpers.
- :mod:`relay.proto.indication`: Data indications (RFC 8656 §11.3) written in place.
- :mod:`relay.proto.framing`: a TURN-over-TCP stream split into STUN and ChannelData frames.
"""
