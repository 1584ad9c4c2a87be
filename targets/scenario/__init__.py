"""The scenario loop's review tasks and its command lines (scenario, stage)."""
