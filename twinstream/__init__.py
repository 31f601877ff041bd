"""twinstream: a streaming SQL database whose upgrades are invisible to its users.

Start here: ARCHITECTURE.md maps the packages. Data flows one way:
client -> balancer -> pgwire -> adapter -> controller -> replicas (compute, storage) -> persist.
"""

__version__ = "0.1.0"
