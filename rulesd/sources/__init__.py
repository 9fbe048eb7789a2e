"""Event sources: a tailed file, standard input, the systemd journal."""
