"""Talking to the GX: the Venus paths, the Source interface and one module per transport."""
