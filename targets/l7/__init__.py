"""The L7 prompt map runner's doit tasks, its in-process runner and its command line."""
