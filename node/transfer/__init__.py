"""Moving model bytes between nodes: verified, resumable, bounded.

- `BlobFetcher` (stream blobs from holders into the store) → fetch.py
- `Writeback` (start writing streamed bytes to disk early, so the commit's fsync is short) → writeback.py
- `pull`, `pull_from_network` (manifest → blobs → registry → visible folder) → pull.py
"""
