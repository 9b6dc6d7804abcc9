"""The `vitkit` command line: one module per subcommand group, each a thin layer over one library function."""
