"""Who may mount: the exports file (Linux exports(5) syntax), matched per client."""
