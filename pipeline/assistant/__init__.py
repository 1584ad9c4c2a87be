"""The reference assistant under test: a warehouse Q&A service over HTTP (see ``app``)."""
