"""Helpers shared by the tests: project copies, servers started on 127.0.0.1, fault proxies."""
