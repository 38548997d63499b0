"""Client and upstream wire formats: pure functions, no Django, no I/O."""
