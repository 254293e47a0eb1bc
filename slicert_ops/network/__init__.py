"""Whole networks, layer by layer (issue 9): description, int8 quantisation, reference."""
