"""Example input files shipped with the package (`gnlc example application`)."""
