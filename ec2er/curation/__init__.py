"""curation stage."""
