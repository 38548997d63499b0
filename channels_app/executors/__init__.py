"""One module per upstream family; ``registry`` maps a channel kind to its executor."""
