"""Shared pieces every family uses: errors, hashing, the one writer, JSON reading, clock, lock,
rendering, the strict model base, the build DB records."""
