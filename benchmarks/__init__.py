"""Speed and scale measurements (not tests)."""

# signs the audit of benchmark databases, thrown away after each run; the engine refuses to start without a key
AUDIT_KEY = "benchmark-only-audit-key-0123456789abcdef"
