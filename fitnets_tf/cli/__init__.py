"""The command-line programs: each reads flags and calls the library."""
