"""The scenario loop: capture scenarios against an assistant HTTP API, review the answers
(truth, business, LLM judge), roll up statuses, bridge GUI runs, and gate saves."""
