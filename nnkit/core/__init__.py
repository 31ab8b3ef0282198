"""Pure-Python layer arithmetic. Nothing under nnkit.core imports torch (a subprocess test proves it)."""
