"""Data: sources and preparation of a corpus (load.py is the entry), its cache, and the data order."""
