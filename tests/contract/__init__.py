"""The cross-framework contract suite: one set of requests, every adapter, the same answers."""
