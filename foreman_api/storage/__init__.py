"""Storage: table definitions, engine set-up and migrations. All SQL lives below here."""
