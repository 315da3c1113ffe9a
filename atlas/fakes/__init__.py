"""Loopback stand-ins for the external services, for tests, the demo and benchmarks.

They speak the real protocols over real sockets so the real client code runs
against them; they bind 127.0.0.1 only.
"""
