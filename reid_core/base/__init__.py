"""The ground every package stands on: atomic file writes, progress bars, dataclass fields that carry their
command-line flags. Imports nothing of reid_core."""
