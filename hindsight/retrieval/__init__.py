"""Cross-file retrieval for completion prompts: the workspace index, BM25 and the import graph."""
