"""Store functions: queries and state changes that only flush (the edges commit)."""
