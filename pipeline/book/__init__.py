"""The book family: a book on disk, its artifact models, the eight phases, their runner, the
resume rules, the ledger view and the default templates."""
