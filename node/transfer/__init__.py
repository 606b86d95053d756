"""Moving model bytes between nodes: verified, resumable, bounded.

- `BlobFetcher` (stream blobs from holders into the store) → fetch.py
- `pull`, `pull_from_network` (manifest → blobs → registry → visible folder) → pull.py
"""
