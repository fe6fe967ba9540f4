"""The turnscale TURN relay: STUN/TURN codec, auth, allocations, peer policy, transports."""
