"""Galleries: the SQLite store, the search index and the ingest of uploads into rows; synthetic embeddings for
search benchmarks."""
