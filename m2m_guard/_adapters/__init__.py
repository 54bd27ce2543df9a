"""Framework-specific helpers of the public adapters (private: see docs/architecture.md)."""
