"""The book pipeline as doit tasks and the book's doit commands."""
