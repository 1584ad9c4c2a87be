"""``doit fleet``: units of work (books, L7 sessions, packs) spread over a Dask cluster."""
