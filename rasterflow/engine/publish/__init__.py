"""What a run wrote, for people: a table row per output (outputs) and a quicklook PNG (quicklook)."""
