"""Git sources: the local repository cache."""
