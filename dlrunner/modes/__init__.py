"""What `dlrun mode=...` does: one module per mode."""
