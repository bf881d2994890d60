"""Token extraction and verification."""
